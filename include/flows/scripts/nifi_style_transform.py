# Script Step in the full NiFi ExecuteScript style: turns the Omnitron cancellation plan into the
# ERP's cancellation request. A plan that cannot be read goes to REL_FAILURE.
import json

from java.nio.charset import StandardCharsets
from org.apache.commons.io import IOUtils
from org.apache.nifi.processor.io import StreamCallback


class TransformCallback(StreamCallback):
    def __init__(self, channel_type):
        self.channel_type = channel_type
        self.order_number = None

    def process(self, inputStream, outputStream):
        plan = json.loads(IOUtils.toString(inputStream, StandardCharsets.UTF_8))
        order = plan["order"]
        self.order_number = order["number"]
        request = {
            "order_number": order["number"],
            "cancellation_id": plan["pk"],
            "type": "REFUND" if plan["plan_type"] == "refund" else "CANCEL",
            "channel_type": self.channel_type,
            "refund_amount": plan["refund_amount"],
            "currency": order["currency"].upper(),
            "lines": [
                {
                    "sku": item["order_item"]["product"]["sku"],
                    "quantity": item["order_item"]["quantity"],
                    "price": item["order_item"]["price"],
                }
                for item in plan["cancellationplanorderitem_set"]
            ],
        }
        outputStream.write(bytearray(json.dumps(request).encode("utf-8")))


flowFile = session.get()
if flowFile is not None:
    callback = TransformCallback(flowFile.getAttribute("channel_type") or "web")
    try:
        flowFile = session.write(flowFile, callback)
        flowFile = session.putAttribute(flowFile, "order_number", callback.order_number)
        log.info("ERP cancellation request built for order %s" % callback.order_number)
        session.transfer(flowFile, REL_SUCCESS)
    except Exception as error:
        log.error("cannot build the ERP cancellation request:", repr(error))
        session.transfer(flowFile, REL_FAILURE)
