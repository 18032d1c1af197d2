# Script Step (short style): enrich the cancellation plan before the mapping step.
#   erp_reason_code  - the ERP's code for the plan's cancellation reason, matched on its subject
#   total_quantity   - units cancelled over all the plan's items
# Attributes: integration_code ("IC-<plan pk>", the Omnitron integration mapping code in
# order_transaction flows) and log.transform, written to the task log.
import json

REASON_CODES = {
    "Yanlış ürün aldım.": "WRONG_ITEM",
    "Ürün hasarlı geldi.": "DAMAGED",
    "Vazgeçtim.": "CHANGED_MIND",
    "Beden uymadı.": "WRONG_SIZE",
}

plan = json.loads(input_text)

subject = ((plan.get("reason") or {}).get("subject") or "").strip()
plan["erp_reason_code"] = REASON_CODES.get(subject, "OTHER")
plan["total_quantity"] = sum(
    int(item["order_item"]["quantity"]) for item in plan.get("cancellationplanorderitem_set") or []
)

session.putAttribute(flowFile, "integration_code", "IC-%s" % plan["pk"])
session.putAttribute(
    flowFile,
    "log.transform",
    "plan %s (%s): reason %s, %s unit(s)"
    % (plan["pk"], get_attribute("channel_type"), plan["erp_reason_code"], plan["total_quantity"]),
)
outputStream.write(json.dumps(plan, ensure_ascii=False))
