# Custom Response Script (the Integrator's default template; copy it and edit the rules).
#
# Runs once per cancellation plan after the Write Data to ERP step. input_text is the ERP's response
# body, request_data the body that was sent. Available attributes: invokehttp.status.code (missing
# when the ERP gave no answer: timeout or connection error), channel_type, rejected_count.
#
# Set the "relation" attribute to one of:
#   continue   - the ERP accepted the plan; Omnitron moves it to the flow's Next State
#   failure    - the ERP rejected the plan; it is marked rejected and not processed again
#   do_nothing - not decided now; the plan is retried by a later run (not for "completed" flows)
#   auth_fail  - the ERP refused our credentials; log in again and repeat the request
flowFile = session.get()
if flowFile is not None:
    status = (flowFile.getAttribute("invokehttp.status.code") or "").strip()
    code = int(status) if status.isdigit() else None

    if code is None:
        relation = "do_nothing"  # no answer: timeout or connection error
    elif 200 <= code < 300:
        relation = "continue"
    elif code in (401, 403):
        relation = "auth_fail"
    elif code in (408, 429) or code >= 500:
        relation = "do_nothing"  # the ERP is busy or down: try again later
    elif 400 <= code < 500:
        relation = "failure"
    else:
        relation = "do_nothing"  # 1xx/3xx are not an answer to act on

    session.putAttribute(flowFile, "relation", relation)
    session.transfer(flowFile, REL_SUCCESS)
