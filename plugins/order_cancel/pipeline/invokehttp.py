"""The attributes NiFi's InvokeHTTP processor writes on a flow file after a request, which the
Integrator's response scripts read (`get_attribute("invokehttp.status.code")`)."""

from __future__ import annotations

from http import HTTPStatus

from order_cancel.clients.erp import ErpAnswer

STATUS_CODE = "invokehttp.status.code"
STATUS_MESSAGE = "invokehttp.status.message"
REQUEST_URL = "invokehttp.request.url"
REQUEST_DURATION = "invokehttp.request.duration"
RESPONSE_URL = "invokehttp.response.url"
TX_ID = "invokehttp.tx.id"
RESPONSE_BODY = "invokehttp.response.body"
EXCEPTION_CLASS = "invokehttp.java.exception.class"
EXCEPTION_MESSAGE = "invokehttp.java.exception.message"
# InvokeHTTP's "Max Length To Put In Attribute" (256 by default): the whole body is the script's input_text.
MAX_BODY_ATTRIBUTE = 256


def invokehttp_attributes(answer: ErpAnswer) -> dict[str, str]:
    """What InvokeHTTP records of one request: its status, URLs, duration and transaction id; the
    answer's body when it is not a success; the exception when no answer came."""
    attributes = {REQUEST_URL: answer.request_url, TX_ID: answer.tx_id}
    if answer.status_code is None:
        kind, message = answer.exception or (answer.error or "", "")
        return {**attributes, EXCEPTION_CLASS: kind, EXCEPTION_MESSAGE: message}
    attributes.update(
        {
            STATUS_CODE: str(answer.status_code),
            STATUS_MESSAGE: answer.reason or _reason(answer.status_code),
            REQUEST_DURATION: str(answer.duration_ms),
            RESPONSE_URL: answer.response_url or answer.request_url,
        }
    )
    if not 200 <= answer.status_code < 300:
        attributes[RESPONSE_BODY] = answer.text[:MAX_BODY_ATTRIBUTE]
    return attributes


def _reason(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return ""
