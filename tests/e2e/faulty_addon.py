"""Test-only mitmproxy script that makes rr's own code raise for requests
carrying `x-test-break-rr: <hook>`, to prove rr fails closed. Loaded after rr."""

from mitmproxy import ctx

HEADER = "x-test-break-rr"


class BreakRR:
    def running(self):
        from rr_addon.core import decide  # what the request pipeline (rr_addon.gate) calls to admit a caller

        rr = ctx.master.addons.get("rr")
        real_admit = decide.admit

        def admit(snap, facts, now):
            if (HEADER, "requestheaders") in facts.headers:
                raise RuntimeError("injected fault in admit")
            return real_admit(snap, facts, now)

        decide.admit = admit
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
