"""rr_addon.mitm.patches: every patch of a mitmproxy internal checks its shape first.

The first test is the alarm for a mitmproxy upgrade: it fails, naming the
internal, when an installed mitmproxy no longer has a shape rr patches."""

from __future__ import annotations


import pytest
from mitmproxy import addonmanager, http
from mitmproxy.proxy.layers.http import HttpLayer, HttpStream

from rr_addon.mitm import patches
from rr_addon.testing.fresh import python_prints


def test_every_internal_rr_patches_still_has_the_shape_rr_relies_on():
    assert patches.check_shapes() == []


def test_the_wire_seam_is_installed_by_loading_the_addon():
    code = (
        "import rr_addon.addon; from mitmproxy.proxy.layers.http import HttpLayer, HttpStream\n"
        "print(all(getattr(f, '_rr_wrapped', False) for f in (HttpLayer.event_to_child, HttpStream.make_server_connection, HttpStream.check_body_size)))"
    )
    assert python_prints(code) == "True"


@pytest.mark.parametrize("name", ["make_server_connection", "check_body_size"])
def test_the_wire_seam_refuses_a_changed_stream(monkeypatch, name):
    def changed(self, extra):  # a different signature, and not a generator
        return True

    monkeypatch.setattr(HttpLayer, "event_to_child", lambda self, child, event: None)  # unwrapped
    monkeypatch.setattr(HttpStream, name, changed)
    with pytest.raises(RuntimeError, match=name):
        patches.install_wire()


def test_the_wire_seam_refuses_a_changed_router(monkeypatch):
    monkeypatch.setattr(HttpLayer, "event_to_child", lambda self, event: None)
    with pytest.raises(RuntimeError, match=r"HttpLayer.event_to_child\['self', 'event'\]"):
        patches.install_wire()


def test_dispatch_refuses_a_changed_trigger_event(monkeypatch):
    def trigger_event(self, event, extra):  # not a coroutine, and another signature
        return None

    monkeypatch.setattr(addonmanager.AddonManager, "trigger_event", trigger_event)

    class Manager:
        pass

    manager = Manager()
    with pytest.raises(RuntimeError, match="AddonManager.trigger_event"):
        patches.install_dispatch(manager, lambda event: None)
    assert not hasattr(manager, "trigger_event")


def test_typechecks_are_kept_when_post_init_changed(monkeypatch):
    def post_init(self, strict):
        pass

    monkeypatch.setattr(http.MessageData, "__post_init__", post_init)
    with pytest.raises(RuntimeError, match="MessageData.__post_init__"):
        patches.skip_message_typechecks()
    assert http.MessageData.__post_init__ is post_init


def test_option_changes_refuse_a_manager_that_is_not_connected():
    class Signal:
        receivers: list = []

    class Master:
        class options:
            changed = Signal()

        class addons:
            @staticmethod
            def _configure_all(updated):
                pass

    with pytest.raises(RuntimeError, match="_configure_all not connected"):
        patches.route_option_changes(Master, lambda updated: None)


def test_options_are_read_without_copies_only_where_a_copy_cannot_matter():
    """`read_options_without_copies` (rr run): immutable values come back as stored,
    anything else is still a fresh copy, as mitmproxy's own `_Option.current`."""
    code = (
        "from typing import Optional\nfrom mitmproxy import options, optmanager\n"
        "from rr_addon.mitm import patches\n"
        "patches.read_options_without_copies(); patches.read_options_without_copies()\n"
        "o = options.Options()\n"
        "o.add_option('l', list, [1, [2]], 'l'); o.add_option('f', float, 0.5, 'f'); o.add_option('n', Optional[str], None, 'n')\n"
        "got = o.l; got[1].append(3); got.append(4)\n"
        "o.update(l=[5]); again = o.l; again.append(6)\n"
        "o.update(listen_host='127.0.0.9', n='x')\n"
        "print(getattr(optmanager._Option.current, '_rr_wrapped', False), o.l, o.listen_host, o.listen_port, o.f, o.n, o.ssl_insecure, o.allow_hosts)"
    )
    assert python_prints(code) == "True [5] 127.0.0.9 None 0.5 x False []"


def test_options_without_copies_refuses_a_changed_option(monkeypatch):
    from mitmproxy import optmanager

    monkeypatch.setattr(optmanager._Option, "current", lambda self: self.value)  # unwrapped, no copy
    with pytest.raises(RuntimeError, match="_Option"):
        patches.read_options_without_copies()
