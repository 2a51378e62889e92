"""Everything that touches mitmproxy: hooks glue, the wire seam, flows, views, the runner and the patches of its internals."""
