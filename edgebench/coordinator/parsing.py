"""Requests that do not parse get a status an agent understands. grpc-python answers a
request its deserializer cannot parse with UNKNOWN (a server error); this interceptor
answers INVALID_ARGUMENT instead, and turns an unparsable message inside a stream into an
empty one, which the session counts as malformed (service.MAX_BOGUS_PER_SESSION)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

UNPARSABLE: Any = object()  # what a request that does not parse becomes


def _safe(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, ValueError, TypeError):
            return UNPARSABLE

    return parse


async def _refuse(context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request could not be parsed")


def _unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is UNPARSABLE:
            await _refuse(context)
        return await behavior(request, context)

    return checked


def _unary_stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if request is UNPARSABLE:
            await _refuse(context)
        async for reply in behavior(request, context):
            yield reply

    return checked


def _stream(behavior: Callable[..., Any], empty: Callable[[], Any]) -> Callable[..., Any]:
    async def checked(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async def parsed() -> AsyncIterator[Any]:
            async for request in requests:
                yield empty() if request is UNPARSABLE else request

        async for reply in behavior(parsed(), context):
            yield reply

    return checked


class ParseErrorsAreInvalidArguments(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, empty_messages: dict[str, Callable[[], Any]]) -> None:
        self._empty = empty_messages  # method path -> its stream's empty request message

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler: Any = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        safe = handler._replace(request_deserializer=_safe(handler.request_deserializer))
        if handler.unary_unary:
            return safe._replace(unary_unary=_unary(handler.unary_unary))
        if handler.unary_stream:
            return safe._replace(unary_stream=_unary_stream(handler.unary_stream))
        empty = self._empty.get(handler_call_details.method)
        if handler.stream_stream and empty is not None:
            return safe._replace(stream_stream=_stream(handler.stream_stream, empty))
        return handler
