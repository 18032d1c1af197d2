# Custom Response Script of the ACME ERP.
#
# The ERP answers 201 {"id": ..., "status": "accepted"} for a booked cancellation and
# 409 {"status": "duplicate"} when it already has the plan: that one was delivered before, so the
# flow moves on. A rejected plan is sent for manual review (failure) only when the order has no
# rejected plan yet; otherwise it is left for a later run, so a person can look at the order first.
import json

status = int(get_attribute("invokehttp.status.code"))
try:
    answer = json.loads(input_text) if input_text else {}
except ValueError:
    answer = {}
rejected = int(get_attribute("rejected_count") or 0)

if 200 <= status < 300 and answer.get("status") == "accepted":
    relation = "continue"
elif status == 409 and answer.get("status") == "duplicate":
    relation = "continue"
elif status in (401, 403):
    relation = "auth_fail"
elif 400 <= status < 500:
    relation = "failure" if rejected == 0 else "do_nothing"
else:
    relation = "do_nothing"

session.putAttribute(flowFile, "relation", relation)
session.putAttribute(flowFile, "log.response", "plan %s: HTTP %s, %s previously rejected -> %s"
                     % (request_data.get("cancellationId"), status, rejected, relation))
