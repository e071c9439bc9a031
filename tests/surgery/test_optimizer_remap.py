"""Optimizer remap after parameter replacement (engine.surgery.optimizer).

The surgery here is done by hand, Torch-Pruning style: a resized layer gets new ``nn.Parameter``
objects (rows of the producer, columns of the consumer). Expected state is computed with
advanced indexing (``t[keep]``), independently of the ``index_select`` the module uses.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from engine.errors import EngineError
from engine.surgery import (
    DimRemap,
    OptimizerRemapError,
    ParamChange,
    optimizer_snapshot,
    remap_optimizer,
    remap_tensor,
    restore_optimizer,
)

Factory = Callable[[list], torch.optim.Optimizer]

OPTIMIZERS: dict[str, Factory] = {
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    "sgd_nesterov_wd": lambda ps: torch.optim.SGD(
        ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4
    ),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "adam_amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2),
    "adamw_amsgrad": lambda ps: torch.optim.AdamW(ps, lr=1e-2, amsgrad=True),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3),
    "rmsprop_centered_momentum": lambda ps: torch.optim.RMSprop(
        ps, lr=1e-3, centered=True, momentum=0.9
    ),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=0.05),
}
# Update rules that act element by element (Adafactor's factored variance does not).
ELEMENTWISE = list(OPTIMIZERS)
if hasattr(torch.optim, "Adafactor"):  # torch >= 2.5
    OPTIMIZERS["adafactor"] = lambda ps: torch.optim.Adafactor(ps, lr=1e-2)

# State keys each optimizer must have after a few steps (so the checks below are not vacuous).
PARAM_SHAPED_KEYS = {
    "sgd_momentum": {"momentum_buffer"},
    "sgd_nesterov_wd": {"momentum_buffer"},
    "adam": {"exp_avg", "exp_avg_sq"},
    "adam_amsgrad": {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    "adamw": {"exp_avg", "exp_avg_sq"},
    "adamw_amsgrad": {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    "rmsprop": {"square_avg"},
    "rmsprop_centered_momentum": {"square_avg", "momentum_buffer", "grad_avg"},
    "adagrad": {"sum"},
    "adafactor": set(),  # weights: row_var/col_var (factored); biases: variance
}

HIDDEN0_KEEP = [0, 2, 5, 6, 7]  # of 8 units in the first hidden layer
HIDDEN1_KEEP = [1, 3, 4, 5]  # of 6 units in the second hidden layer


# --- helpers ---------------------------------------------------------------------------------


def make_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)
    ).to(dtype)


def fixed_batch(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(32, 5, generator=g).to(dtype)
    y = torch.randn(32, 3, generator=g).to(dtype)
    return x, y


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> list[float]:
    x, y = fixed_batch(next(model.parameters()).dtype)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def loss_now(model: nn.Module) -> float:
    x, y = fixed_batch(next(model.parameters()).dtype)
    with torch.no_grad():
        return nn.functional.mse_loss(model(x), y).item()


def trained(name: str, steps: int = 4, **kw) -> tuple[nn.Sequential, torch.optim.Optimizer]:
    model = make_model(**kw)
    opt = OPTIMIZERS[name](list(model.parameters()))
    train(model, opt, steps)
    return model, opt


def expected(t: torch.Tensor, remaps: list[tuple[int, list[int], int]]) -> torch.Tensor:
    """Oracle: kept slices by advanced indexing, then zero slices, along each dim."""
    for dim, keep, added in remaps:
        t = t.movedim(dim, 0)[torch.tensor(keep, dtype=torch.long)]
        t = torch.cat([t, t.new_zeros((added, *t.shape[1:]))]).movedim(0, dim)
    return t


def resize(
    model: nn.Sequential, spec: dict[int, tuple[list[int], int]], seed: int = 7
) -> tuple[list[ParamChange], dict[int, list[tuple[int, list[int], int]]]]:
    """Resize hidden layers in place with new Parameters. ``spec``: producer Linear index ->
    (kept units, added units). Grown units get random incoming and zero outgoing weights, so
    growth alone preserves the function. Returns the changes and, per ``id(old)``, the remaps
    as (dim, keep, added) for the oracle."""
    g = torch.Generator().manual_seed(seed)
    changes, oracle = [], {}
    for i, layer in enumerate(model):
        if not isinstance(layer, nn.Linear):
            continue
        out_spec, in_spec = spec.get(i), spec.get(i - 2)
        w_remaps = []
        if out_spec is not None:
            w_remaps.append((0, *out_spec))
        if in_spec is not None:
            w_remaps.append((1, *in_spec))
        if not w_remaps:
            continue
        old_w, old_b = layer.weight, layer.bias
        w = expected(old_w.detach(), w_remaps)
        if out_spec is not None:  # random incoming weights for grown units
            n_keep, added = len(out_spec[0]), out_spec[1]
            w[n_keep:] = 0.3 * torch.randn(added, w.shape[1], generator=g).to(w.dtype)
        new_w = nn.Parameter(w, requires_grad=old_w.requires_grad)
        layer.weight = new_w
        changes.append(ParamChange(old_w, new_w, [DimRemap(d, k, a) for d, k, a in w_remaps]))
        oracle[id(old_w)] = w_remaps
        if out_spec is not None:
            b_remaps = [(0, *out_spec)]
            new_b = nn.Parameter(
                expected(old_b.detach(), b_remaps), requires_grad=old_b.requires_grad
            )
            layer.bias = new_b
            changes.append(ParamChange.along(old_b, new_b, 0, *out_spec))
            oracle[id(old_b)] = b_remaps
        layer.out_features, layer.in_features = new_w.shape
    return changes, oracle


def clone_state(opt: torch.optim.Optimizer) -> dict:
    return {
        p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
        for p, s in opt.state.items()
    }


def assert_state_bitwise(opt: torch.optim.Optimizer, reference: dict) -> None:
    assert set(map(id, opt.state)) == set(map(id, reference))
    for p, ref in reference.items():
        state = opt.state[p]
        assert state.keys() == ref.keys()
        for k, v in ref.items():
            if torch.is_tensor(v):
                assert torch.equal(state[k], v), k
                assert state[k].dtype == v.dtype
            else:
                assert state[k] == v


def param_lists(opt: torch.optim.Optimizer) -> list[list[torch.Tensor]]:
    return [list(g["params"]) for g in opt.param_groups]


PRUNE = {0: (HIDDEN0_KEEP, 0)}
GROW = {0: (list(range(8)), 3)}
PRUNE_AND_GROW_BOTH = {0: (HIDDEN0_KEEP, 2), 2: (HIDDEN1_KEEP, 1)}  # model[2].weight: 2 dims
CASES = {"prune": PRUNE, "grow": GROW, "both": PRUNE_AND_GROW_BOTH}


# --- (1) groups re-pointed, (2) state sliced bitwise, (3) steps kept, (4) growth zeros ------


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_groups_repointed_and_state_remapped(name: str, case: str) -> None:
    model, opt = trained(name)
    before_lists = param_lists(opt)
    list_objects = [g["params"] for g in opt.param_groups]
    old_state = clone_state(opt)
    old_state_objects = {id(p): s for p, s in opt.state.items()}
    keys = set().union(*(s.keys() for s in opt.state.values()))
    assert PARAM_SHAPED_KEYS[name] <= keys

    changes, oracle = resize(model, CASES[case])
    remap_optimizer(opt, changes)

    # (1) same positions, same list objects, new Parameters exactly where the old ones were.
    by_old = {id(c.old): c.new for c in changes}
    after_lists = param_lists(opt)
    assert [g["params"] for g in opt.param_groups] == list_objects
    for before, after in zip(before_lists, after_lists):
        assert len(before) == len(after)
        for p_old, p_new in zip(before, after):
            assert p_new is by_old.get(id(p_old), p_old)
    assert [id(p) for p in after_lists[0]] == [id(p) for p in model.parameters()]

    # (2)-(4) every param-shaped tensor = oracle (kept slices bitwise, added slices zero).
    for change in changes:
        assert change.old not in opt.state
        old, new = old_state[change.old], opt.state[change.new]
        assert new.keys() == old.keys()
        assert new is not old_state_objects[id(change.old)]
        for k, v in old.items():
            got = new[k]
            if torch.is_tensor(v) and v.shape == change.old.shape:
                assert got.shape == change.new.shape, k
                assert torch.equal(got, expected(v, oracle[id(change.old)])), k
            elif torch.is_tensor(v) and v.dim() == 0:  # step: kept, copied
                assert torch.equal(got, v) and got.dtype == v.dtype, k
            elif torch.is_tensor(v):  # Adafactor's factored row_var / col_var
                remaps = [r for r in oracle[id(change.old)] if v.shape[r[0]] != 1]
                assert torch.equal(got, expected(v, remaps)), k
            else:
                assert got == v, k
            if torch.is_tensor(v):
                assert got.dtype == v.dtype and got.device == v.device
    # The old state dicts and tensors were not written to.
    for p, ref in old_state.items():
        for k, v in old_state_objects[id(p)].items():
            assert torch.equal(v, ref[k]) if torch.is_tensor(v) else v == ref[k]


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if not n.startswith("sgd")])
def test_steps_are_kept(name: str) -> None:
    model, opt = trained(name, steps=5)
    changes, _ = resize(model, PRUNE_AND_GROW_BOTH)
    remap_optimizer(opt, changes)
    for change in changes:
        assert float(opt.state[change.new]["step"]) == 5.0


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_growth_rows_zero_and_survivors_unchanged(name: str) -> None:
    model, opt = trained(name)
    w_old = model[0].weight
    old = {k: v.clone() for k, v in opt.state[w_old].items()}
    changes, _ = resize(model, GROW)
    remap_optimizer(opt, changes)
    new = opt.state[model[0].weight]
    for k, v in old.items():
        if torch.is_tensor(v) and v.shape == w_old.shape:
            assert torch.equal(new[k][:8], v), k
            assert torch.count_nonzero(new[k][8:]) == 0, k
    cons = opt.state[model[2].weight]
    for k, v in cons.items():
        if torch.is_tensor(v) and v.shape == model[2].weight.shape:
            assert torch.count_nonzero(v[:, 8:]) == 0, k


# --- (5) training continues with the same optimizer --------------------------------------


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_training_continues_and_loss_decreases(name: str, case: str) -> None:
    model, opt = trained(name)
    loss_before = loss_now(model)
    changes, _ = resize(model, CASES[case])
    if case == "grow":  # zero outgoing weights: growth alone preserves the function
        assert loss_now(model) == pytest.approx(loss_before, rel=1e-6)
    remap_optimizer(opt, changes)
    start = loss_now(model)
    losses = train(model, opt, 15)
    assert losses[-1] < start
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # The remapped optimizer round-trips through its own state_dict onto a fresh optimizer.
    fresh = OPTIMIZERS[name](list(model.parameters()))
    fresh.load_state_dict(opt.state_dict())
    assert_state_bitwise(fresh, {p: opt.state[p] for p in opt.state})


def test_dtype_and_device_are_kept() -> None:
    model, opt = trained("adam", dtype=torch.float64)
    changes, _ = resize(model, PRUNE_AND_GROW_BOTH)
    remap_optimizer(opt, changes)
    for change in changes:
        for k in ("exp_avg", "exp_avg_sq"):
            assert opt.state[change.new][k].dtype == torch.float64
    # A device other than the CPU, without needing an accelerator: the meta device.
    old = nn.Parameter(torch.empty(4, 3, device="meta"))
    new = nn.Parameter(torch.empty(2, 3, device="meta"))
    opt = torch.optim.SGD([old], lr=0.1, momentum=0.9)
    opt.state[old] = {"momentum_buffer": torch.empty(4, 3, device="meta", dtype=torch.float16)}
    remap_optimizer(opt, [ParamChange.along(old, new, 0, [1, 3])])
    buf = opt.state[new]["momentum_buffer"]
    assert (buf.device.type, buf.dtype, buf.shape) == ("meta", torch.float16, (2, 3))


def test_other_state_entries_are_copied_unchanged() -> None:
    model, opt = trained("sgd_momentum")
    w = model[0].weight
    marker = object()
    opt.state[w].update(flag=True, count=3, note=marker, nothing=None)
    changes, _ = resize(model, PRUNE)
    remap_optimizer(opt, changes)
    s = opt.state[model[0].weight]
    assert (s["flag"], s["count"], s["nothing"]) == (True, 3, None)
    assert s["note"] is marker


# --- (6) frozen parameters, parameters outside the optimizer ------------------------------


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_frozen_and_unoptimized_parameters(name: str) -> None:
    model = make_model()
    model[2].bias.requires_grad_(False)  # frozen, but in the optimizer
    opt = OPTIMIZERS[name](list(model[0].parameters()) + list(model[2].parameters()))
    train(model, opt, 3)  # model[4] is trained by nobody: it is not in the optimizer
    frozen_had_state = model[2].bias in opt.state  # Adagrad creates state eagerly
    assert model[4].weight not in opt.state

    changes, _ = resize(model, {2: (HIDDEN1_KEEP, 1)})  # model[2] rows, model[4] columns
    remap_optimizer(opt, changes)

    frozen = model[2].bias
    assert not frozen.requires_grad
    assert any(p is frozen for p in opt.param_groups[0]["params"])
    assert (frozen in opt.state) == frozen_had_state
    unoptimized = model[4].weight
    assert all(p is not unoptimized for g in opt.param_groups for p in g["params"])
    assert unoptimized not in opt.state
    assert all(c.old not in opt.state for c in changes)

    frozen_value = frozen.detach().clone()
    unoptimized_value = unoptimized.detach().clone()
    train(model, opt, 3)
    assert torch.equal(frozen, frozen_value)
    assert torch.equal(unoptimized, unoptimized_value)
    assert (frozen in opt.state) == frozen_had_state


def test_unfreezing_by_surgery_is_refused() -> None:
    # Torch-Pruning builds `nn.Parameter(...)`, which requires grad: surgery must copy the flag.
    model, opt = trained("adam")
    model[0].bias.requires_grad_(False)
    new_b = nn.Parameter(model[0].bias.detach()[:5])  # requires_grad=True by default
    with pytest.raises(OptimizerRemapError, match=r"shape \(8,\).*frozen"):
        remap_optimizer(opt, [ParamChange.along(model[0].bias, new_b, 0, range(5))])


# --- (7) snapshot / restore ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_snapshot_restore_is_exact(name: str) -> None:
    model = make_model()
    groups = [
        {"params": list(model[0].parameters()), "name": "first", "lr": 0.01},
        {"params": list(model[2].parameters()) + list(model[4].parameters()), "tag": [1, 2]},
    ]
    opt = OPTIMIZERS[name](groups)
    train(model, opt, 3)
    reference = make_model()
    ref_opt = OPTIMIZERS[name](
        [
            {"params": list(reference[0].parameters()), "name": "first", "lr": 0.01},
            {"params": list(reference[2].parameters()) + list(reference[4].parameters())},
        ]
    )
    train(reference, ref_opt, 3)

    group_dicts = list(opt.param_groups)
    group_items = [dict(g) for g in group_dicts]
    lists = param_lists(opt)
    list_objects = [g["params"] for g in group_dicts]
    state_objects = dict(opt.state)
    state_values = clone_state(opt)
    module_params = [(m, m.weight, m.bias) for m in model if isinstance(m, nn.Linear)]

    token = optimizer_snapshot(opt)
    changes, _ = resize(model, PRUNE_AND_GROW_BOTH)
    remap_optimizer(opt, changes)
    assert all(c.new in opt.state for c in changes)
    restore_optimizer(opt, token)

    assert opt.param_groups == group_dicts
    assert all(a is b for a, b in zip(opt.param_groups, group_dicts))
    for g, items, objs, lst in zip(opt.param_groups, group_items, lists, list_objects):
        assert g["params"] is lst
        assert len(g["params"]) == len(objs)
        assert all(a is b for a, b in zip(g["params"], objs))
        assert g.keys() == items.keys()
        assert all(g[k] is items[k] for k in items)
    assert all(c.new not in opt.state for c in changes)
    assert opt.state.keys() == state_objects.keys()
    assert all(opt.state[p] is s for p, s in state_objects.items())
    assert_state_bitwise(opt, state_values)

    # Put the module's old Parameters back: training continues exactly as if nothing happened.
    for m, w, b in module_params:
        m.weight, m.bias = w, b
        m.out_features, m.in_features = w.shape
    train(model, opt, 3)
    train(reference, ref_opt, 3)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)


def test_restore_refuses_a_foreign_snapshot() -> None:
    _, opt = trained("sgd_momentum")
    _, other = trained("sgd_momentum")
    with pytest.raises(OptimizerRemapError, match="not taken from this optimizer"):
        restore_optimizer(opt, optimizer_snapshot(other))


# --- (8) failures are typed, named, and change nothing -------------------------------------


def test_bad_shape_is_refused_naming_shape_and_dim() -> None:
    model, _ = trained("adam")
    w = model[0].weight  # (8, 5)
    with pytest.raises(OptimizerRemapError, match=r"shape \(8, 5\).*\(4, 5\).*\(3, 5\).*dim 0"):
        ParamChange.along(w, nn.Parameter(torch.zeros(4, 5)), 0, [0, 1, 2])
    with pytest.raises(OptimizerRemapError, match=r"shape \(8, 5\): dim 1: keep index 5 .* 5"):
        ParamChange.along(w, nn.Parameter(torch.zeros(8, 2)), 1, [0, 5])
    with pytest.raises(OptimizerRemapError, match=r"shape \(8, 5\): dim 2 is out of range"):
        ParamChange.along(w, nn.Parameter(torch.zeros(8, 2)), 2, [0, 1])
    with pytest.raises(OptimizerRemapError, match="dim 1 is remapped twice"):
        ParamChange(w, nn.Parameter(torch.zeros(8, 2)), [DimRemap(1, [0, 1]), DimRemap(-1, [0])])
    with pytest.raises(OptimizerRemapError, match="same object"):
        ParamChange.along(w, w, 0, range(8))
    assert issubclass(OptimizerRemapError, EngineError)
    assert issubclass(OptimizerRemapError, ValueError)


@pytest.mark.parametrize(
    ("keep", "added", "message"),
    [
        ([0, 0, 1], 0, "repeat"),
        ([-1, 2], 0, "negative"),
        ([0.0, 1.0], 0, "integers"),
        ([[0, 1]], 0, "1-D"),
        ([0, 1], -1, "non-negative"),
    ],
)
def test_bad_dim_remaps_are_refused(keep: list, added: int, message: str) -> None:
    with pytest.raises(OptimizerRemapError, match=message):
        DimRemap(0, keep, added)


@pytest.mark.parametrize("name", ["adam", "sgd_momentum", "rmsprop_centered_momentum"])
def test_failing_remap_leaves_optimizer_untouched(name: str) -> None:
    model, opt = trained(name)
    changes, _ = resize(model, PRUNE_AND_GROW_BOTH)
    # The last change's state holds a tensor that fits neither the parameter nor a scalar.
    last = changes[-1].old
    opt.state[last]["odd"] = torch.zeros(7)
    lists, state_objects, values = param_lists(opt), dict(opt.state), clone_state(opt)

    with pytest.raises(OptimizerRemapError, match=r"shape \(3, 6\).*'odd'.*\(7,\).*dim\(s\) \[1\]"):
        remap_optimizer(opt, changes)

    assert all(a is b for x, y in zip(param_lists(opt), lists) for a, b in zip(x, y))
    assert all(opt.state[p] is s for p, s in state_objects.items())
    assert_state_bitwise(opt, values)


def test_conflicting_changes_are_refused_before_anything_changes() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    opt = torch.optim.SGD([*a.parameters(), *b.parameters()], lr=0.1, momentum=0.9)
    a(torch.randn(2, 4)).sum().backward()
    b(torch.randn(2, 4)).sum().backward()
    opt.step()
    lists, values = param_lists(opt), clone_state(opt)
    fresh = nn.Parameter(torch.zeros(4, 4))
    bad = {
        "already in the optimizer": [ParamChange.along(a.weight, b.weight, 0, range(4))],
        "changed twice": [
            ParamChange.along(a.weight, fresh, 0, range(4)),
            ParamChange.along(a.weight, nn.Parameter(torch.zeros(4, 4)), 0, range(4)),
        ],
        "replaces two": [
            ParamChange.along(a.weight, fresh, 0, range(4)),
            ParamChange.along(b.weight, fresh, 0, range(4)),
        ],
        "chained": [
            ParamChange.along(a.weight, fresh, 0, range(4)),
            ParamChange.along(fresh, nn.Parameter(torch.zeros(2, 4)), 0, [0, 1]),
        ],
    }
    for message, changes in bad.items():
        with pytest.raises(OptimizerRemapError, match=message):
            remap_optimizer(opt, changes)
        assert all(x is y for p, q in zip(param_lists(opt), lists) for x, y in zip(p, q))
        assert_state_bitwise(opt, values)


def test_changes_for_parameters_outside_the_optimizer_are_ignored() -> None:
    _, opt = trained("adam")
    stranger = nn.Parameter(torch.zeros(3, 2))
    lists, values = param_lists(opt), clone_state(opt)
    remap_optimizer(opt, [ParamChange.along(stranger, nn.Parameter(torch.zeros(1, 2)), 0, [2])])
    assert all(x is y for p, q in zip(param_lists(opt), lists) for x, y in zip(p, q))
    assert_state_bitwise(opt, values)


# --- (9) must-show: surviving units' Adam moments are the sliced originals ---------------


def test_adam_surviving_moments_equal_sliced_originals() -> None:
    model, opt = trained("adam", steps=6)
    w0, b0, w2 = model[0].weight, model[0].bias, model[2].weight
    originals = {p: opt.state[p]["exp_avg"] for p in (w0, b0, w2)}
    moments = {
        p: (opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone())
        for p in (w0, b0, w2)
    }
    changes, _ = resize(model, PRUNE)
    remap_optimizer(opt, changes)
    keep = torch.tensor(HIDDEN0_KEEP)
    for old, new, sl in [
        (w0, model[0].weight, lambda t: t[keep]),
        (b0, model[0].bias, lambda t: t[keep]),
        (w2, model[2].weight, lambda t: t[:, keep]),
    ]:
        m, v = moments[old]
        assert torch.equal(opt.state[new]["exp_avg"], sl(m))
        assert torch.equal(opt.state[new]["exp_avg_sq"], sl(v))
        assert opt.state[new]["exp_avg"].data_ptr() != originals[old].data_ptr()
        assert torch.equal(originals[old], m)  # the old tensor was not written to


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_pruned_training_matches_slice_of_unpruned_training(name: str) -> None:
    """With a loss that acts on each entry alone, training a pruned parameter with the
    remapped optimizer follows the unpruned run's surviving entries step for step: this
    only holds if every moment, accumulator and step counter carried over correctly."""
    torch.manual_seed(3)
    target = torch.randn(6, 4)
    full = nn.Parameter(torch.randn(6, 4))
    opt_full = OPTIMIZERS[name]([full])
    part = nn.Parameter(full.detach().clone())
    opt_part = OPTIMIZERS[name]([part])

    def run(p: nn.Parameter, o: torch.optim.Optimizer, t: torch.Tensor, steps: int) -> None:
        for _ in range(steps):
            o.zero_grad()
            ((p - t) ** 2 * (1 + t.abs())).sum().backward()
            o.step()

    run(full, opt_full, target, 5)
    run(part, opt_part, target, 5)
    rows, cols = [0, 2, 5], [1, 3]
    pruned = nn.Parameter(part.detach()[rows][:, cols].clone())
    remap_optimizer(opt_part, [ParamChange(part, pruned, [DimRemap(0, rows), DimRemap(1, cols)])])
    run(full, opt_full, target, 5)
    run(pruned, opt_part, target[rows][:, cols], 5)
    torch.testing.assert_close(pruned.detach(), full.detach()[rows][:, cols])


def test_remap_tensor_always_returns_a_new_tensor() -> None:
    t = torch.arange(6.0).reshape(2, 3)
    same = remap_tensor(t, [])
    assert torch.equal(same, t) and same.data_ptr() != t.data_ptr()
    grown = remap_tensor(t, [DimRemap(1, [2], added=2)], fill=0.5)
    assert torch.equal(grown, torch.tensor([[2.0, 0.5, 0.5], [5.0, 0.5, 0.5]]))
