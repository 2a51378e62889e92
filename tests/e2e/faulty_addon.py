"""Test-only mitmproxy script that makes rr's own code raise for requests
carrying `x-test-break-rr: <hook>`, to prove rr fails closed. Loaded after rr."""

from mitmproxy import ctx

HEADER = "x-test-break-rr"


class BreakRR:
    def running(self):
        rr = ctx.master.addons.get("rr")
        hook_globals = type(rr).requestheaders.__wrapped__.__globals__
        real_admit = hook_globals["admit"]

        def admit(snap, facts, now):
            if (HEADER, "requestheaders") in facts.headers:
                raise RuntimeError("injected fault in admit")
            return real_admit(snap, facts, now)

        hook_globals["admit"] = admit
        real_finish = rr.finish

        def finish(flow):
            if flow.request.headers.get(HEADER) == "response":
                raise RuntimeError("injected fault in finish")
            return real_finish(flow)

        rr.finish = finish

    def responseheaders(self, flow):
        # buffer the body, so what rr's response hook decides is what the caller gets
        if flow.request.headers.get(HEADER) == "response" and flow.response is not None:
            flow.response.stream = False


addons = [BreakRR()]
