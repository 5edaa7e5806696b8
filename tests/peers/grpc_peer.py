"""grpcio server and client with no tracing code and no generated stubs
(generic handlers on raw bytes), for kspan's HTTP/2 and gRPC tests.

  server PORT                  serve demo.Greeter on 127.0.0.1:PORT
  client PORT SCRIPT...        run calls on one channel; SCRIPT items:
      unary:N        N unary SayHello calls
      stream:N       one server-streaming call yielding N messages
      fail           a call answered with NOT_FOUND
      internal       a call answered with INTERNAL
      deadline       a call that exceeds its 200 ms deadline
      concurrent:N   N unary calls in flight at once on the channel
      wait           print "waiting" and block until a line on stdin
"""
import sys
import time
from concurrent import futures

import grpc

SERVICE = "demo.Greeter"


def say_hello(request, context):
    return b"hello " + request


def stream_hellos(request, context):
    for i in range(int(request or b"3")):
        yield b"hello %d" % i


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such greeting")


def internal(request, context):
    context.abort(grpc.StatusCode.INTERNAL, "boom")


def slow(request, context):
    time.sleep(1.0)
    return b"late"


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    handlers = {
        "SayHello": grpc.unary_unary_rpc_method_handler(say_hello),
        "StreamHellos": grpc.unary_stream_rpc_method_handler(stream_hellos),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Internal": grpc.unary_unary_rpc_method_handler(internal),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def call(channel, method, kind="unary"):
    path = f"/{SERVICE}/{method}"
    if kind == "stream":
        return channel.unary_stream(path)
    return channel.unary_unary(path)


def client(port, script):
    # One channel = one HTTP/2 connection for every call below.
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        for item in script:
            name, _, arg = item.partition(":")
            n = int(arg or 1)
            if name == "unary":
                for i in range(n):
                    assert call(channel, "SayHello")(b"u%d" % i, timeout=10) == b"hello u%d" % i
            elif name == "stream":
                got = list(call(channel, "StreamHellos", "stream")(str(n).encode(), timeout=10))
                assert len(got) == n, got
            elif name in ("fail", "internal"):
                try:
                    call(channel, "Fail" if name == "fail" else "Internal")(b"x", timeout=10)
                    raise SystemExit("expected an error")
                except grpc.RpcError as e:
                    want = grpc.StatusCode.NOT_FOUND if name == "fail" else grpc.StatusCode.INTERNAL
                    assert e.code() == want, e
            elif name == "deadline":
                try:
                    call(channel, "Slow")(b"x", timeout=0.2)
                    raise SystemExit("expected DEADLINE_EXCEEDED")
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
            elif name == "concurrent":
                stub = call(channel, "SayHello")
                pending = [stub.future(b"c%d" % i, timeout=20) for i in range(n)]
                for i, f in enumerate(pending):
                    assert f.result() == b"hello c%d" % i
            elif name == "wait":
                print("waiting", flush=True)
                sys.stdin.readline()
            else:
                raise SystemExit(f"unknown step {item}")
    print("done", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        client(int(sys.argv[2]), sys.argv[3:])
