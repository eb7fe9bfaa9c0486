"""The accelerator's C ``__init__`` binds arguments exactly as the attrs-generated one it replaces.

For every class that gets it, the same call — positional, keyword, mixed, with defaults left
out, and wrong (too many, unknown, repeated, missing) — either builds equal objects both ways
or raises TypeError both ways.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

import attrs
import pytest
from fleetwire.protocol import envelope
from fleetwire.protocol.agent import actions, admission, agent, bundling, handlers
from fleetwire.protocol.messages import Header, LeaseClaim, accel, codec
from hypothesis import given
from hypothesis import strategies as st

if not accel.AVAILABLE or not isinstance(Header.__dict__["__init__"], accel._speedups.SlotInit):
    pytest.skip("the C accelerator is not built, or --pure-python", allow_module_level=True)

CLASSES = (
    *codec.FAST_INIT_CLASSES, *envelope.FAST_INIT_CLASSES, *actions.FAST_INIT_CLASSES,
    *bundling.FAST_INIT_CLASSES, *admission.FAST_INIT_CLASSES, agent._Held, handlers.Outgoing,
)  # fmt: skip
values = st.one_of(st.integers(), st.text(max_size=3), st.none(), st.tuples(st.integers()))


def outcome(cls: type[Any], init: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    obj = object.__new__(cls)
    try:
        init(obj, *args, **kwargs)
    except TypeError:
        return TypeError
    return tuple(getattr(obj, a.name) for a in attrs.fields(cls))


@st.composite
def calls(draw: st.DrawFn) -> tuple[type[Any], tuple[Any, ...], dict[str, Any]]:
    cls = draw(st.sampled_from(CLASSES))
    names = [a.name for a in attrs.fields(cls)]
    positional = draw(st.integers(0, len(names) + 1))
    args = tuple(draw(values) for _ in range(positional))
    keywords = draw(st.lists(st.sampled_from([*names, "bogus"]), unique=True, max_size=len(names)))
    return cls, args, {name: draw(values) for name in keywords}


@given(calls())
def test_binds_like_the_attrs_init(call: tuple[type[Any], tuple[Any, ...], dict[str, Any]]) -> None:
    cls, args, kwargs = call
    fast = cls.__dict__["__init__"]
    assert outcome(cls, fast, args, kwargs) == outcome(cls, fast.__wrapped__, args, kwargs)


def made(cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        obj = cls(*args, **kwargs)
    except TypeError:
        return TypeError
    assert type(obj) is cls
    return tuple(getattr(obj, a.name) for a in attrs.fields(cls))


@given(calls())
def test_calling_the_class_builds_as_type_call_and_the_attrs_init_do(
    call: tuple[type[Any], tuple[Any, ...], dict[str, Any]],
) -> None:
    # Cls(...) goes straight to the SlotInit (construct_fast), past type.__call__: the same
    # objects, and TypeError for the same calls, as type.__call__ with the attrs __init__.
    cls, args, kwargs = call
    fast = made(cls, args, kwargs)
    assert fast == outcome(cls, cls.__dict__["__init__"].__wrapped__, args, kwargs)
    assert fast == made(cls, args, kwargs) and fast == (
        TypeError if fast is TypeError else tuple(
            getattr(type.__call__(cls, *args, **kwargs), a.name) for a in attrs.fields(cls)
        )
    )  # fmt: skip


def test_a_class_whose_init_is_replaced_is_called_through_type_call() -> None:
    @attrs.frozen(slots=True)
    class Point:
        x: int
        y: int = 0

    assert accel.install_fast_init(Point)
    assert Point(1) == Point(x=1, y=0)
    seen: list[tuple[Any, ...]] = []
    original = Point.__init__.__wrapped__  # type: ignore[attr-defined]

    def watched(self: Point, *args: Any, **kwargs: Any) -> None:
        seen.append(args)
        original(self, *args, **kwargs)

    Point.__init__ = watched  # type: ignore[method-assign]
    assert Point(2, 3) == Point(x=2, y=3) and seen == [(2, 3), ()]
    accel.remove_fast_init(Point)  # a no-op now: the class's __init__ is not the C one
    assert Point(4).x == 4 and len(seen) == 3


def test_a_class_with_its_own_new_keeps_it() -> None:
    news: list[tuple[Any, ...]] = []

    @attrs.frozen(slots=True)
    class Counted:
        n: int

        def __new__(cls, *args: Any, **kwargs: Any) -> Counted:
            news.append(args)
            return super().__new__(cls)

    assert accel.install_fast_init(Counted)
    assert Counted(5).n == 5 and news == [(5,)]  # __new__, then the C __init__, as ever


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_required_and_default_argument(cls: type[Any]) -> None:
    fields = attrs.fields(cls)
    required = [a for a in fields if a.default is attrs.NOTHING]
    given_args = {a.name: f"value of {a.name}" for a in required}
    built = cls(**given_args)
    for a in fields:
        assert getattr(built, a.name) == given_args.get(a.name, a.default)
    if required:  # leaving one out is a TypeError, as with attrs
        with pytest.raises(TypeError, match=required[-1].name):
            cls(**{name: v for name, v in given_args.items() if name != required[-1].name})


def test_subclass_instances_go_to_the_original_init() -> None:
    @attrs.frozen(slots=True)
    class Wider(Header):
        extra: int = 0

    wide = Wider(1, 2, 3, extra=4)
    assert (wide.issuer, wide.sequence, wide.extra) == (1, 3, 4)


def test_reference_counts_balance() -> None:
    """Building and dropping many objects leaves no references behind (no leak, no free)."""
    text = "cell-3/dock-2-" + "x" * 20
    header = Header(issuer=4711, issued_at=1, sequence=2)
    before = sys.getrefcount(text), sys.getrefcount(header)
    for _ in range(1000):
        claim = LeaseClaim(header, text, 7)
        claim = LeaseClaim(header=header, resource=text, term_ms=7)
    del claim
    gc.collect()
    assert (sys.getrefcount(text), sys.getrefcount(header)) == before


def test_introspection_sees_the_original_signature() -> None:
    import inspect

    assert list(inspect.signature(Header).parameters)[:3] == ["issuer", "issued_at", "sequence"]
    assert Header.__init__.__qualname__ == "Header.__init__"


def test_every_class_listed_got_the_c_init() -> None:
    """A class listed whose __init__ stayed the attrs one (a shape install_fast_init refuses)
    would silently keep the slow road."""
    assert all(isinstance(cls.__dict__["__init__"], accel._speedups.SlotInit) for cls in CLASSES)


def test_pure_python_road_puts_the_bundle_inits_back() -> None:
    with codec.without_accelerator():
        for cls in bundling.FAST_INIT_CLASSES:
            assert not isinstance(cls.__dict__["__init__"], accel._speedups.SlotInit)
        primary = bundling.message_bundle(b"x", source=1, destination=2, created_at=3,
                                          sequence=4, lifetime_ms=5).primary  # fmt: skip
        assert (primary.creation.time, primary.creation.sequence, primary.lifetime) == (3, 4, 5)
    assert all(isinstance(cls.__dict__["__init__"], accel._speedups.SlotInit)
               for cls in bundling.FAST_INIT_CLASSES)  # fmt: skip
