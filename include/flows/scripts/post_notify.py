# Post Script: after Omnitron has been updated, tell the CRM what the ERP answered.
# request_data / response_data are the ERP call's request and response bodies (parsed JSON where
# they are JSON). The CRM endpoint is the "crm_url" attribute; without it the script does nothing.
# Its output is not used; an error (the CRM refusing the call) is logged on the plan.
import requests

crm_url = get_attribute("crm_url")
if not crm_url:
    log.warn("no crm_url attribute: the CRM is not notified")
else:
    order_number = request_data.get("order_number") if isinstance(request_data, dict) else None
    order_number = order_number or get_attribute("order_number")
    response = requests.post(
        crm_url, json={"order_number": order_number, "erp_response": response_data}, timeout=30
    )
    response.raise_for_status()
    log.info("CRM notified about order %s (HTTP %s)" % (order_number, response.status_code))
