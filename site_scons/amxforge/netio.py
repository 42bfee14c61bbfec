"""Every network read amxforge makes has an overall deadline and a byte cap: a server that answers one line and then
a byte per second, or floods, costs at most the deadline (and the cap in memory), and is named in one line. Socket
timeouts alone bound each recv(), not the exchange."""

import socket
import time

DEADLINE = 5.0  # seconds for a whole exchange (connect, ask, answer)
CAP = 1 << 20  # bytes an answer may hold


class Unanswered(OSError):
    """No complete answer: refused, unreachable, too slow, too long, or closed early. str() says which."""


def exchange(host: str, port: int, request: bytes, complete, deadline: float = DEADLINE, cap: int = CAP) -> bytes:
    """Connect, send `request`, read until complete(data) is true or the server closes the connection; the answer
    (the caller judges a short one). Raises Unanswered when there is no answer in time or it is too long."""
    end = time.monotonic() + deadline

    def left() -> float:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise Unanswered(0, f"no complete answer within {deadline:g} s (a server that trickles or hangs)")
        return remaining

    try:
        with socket.create_connection((host, port), timeout=left()) as sock:
            sock.settimeout(left())
            sock.sendall(request)
            data = b""
            while not complete(data):
                sock.settimeout(left())
                chunk = sock.recv(min(65536, cap + 1 - len(data)))
                if not chunk:
                    return data  # closed: what it said is judged by the caller
                data += chunk
                if len(data) > cap:
                    raise Unanswered(0, f"answered more than {cap} bytes (not the server amxforge expects)")
            return data
    except socket.timeout:
        raise Unanswered(0, f"no complete answer within {deadline:g} s (a server that trickles or hangs)") from None
    except Unanswered:
        raise
    except OSError as exc:
        raise Unanswered(exc.errno or 0, exc.strerror or str(exc)) from None
