"""TensorBoard events of ``fit``: read back, they hold the history's epoch means and one value per step."""
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from student.backbones import create_backbone
from student.heads import EgoExoStudent
from student.train import LossWeights, OptimConfig, cpu_has_bf16, fit


class TinyClips(torch.utils.data.Dataset):
    """Random 4-frame 32 px clips with 3 action classes (what ``train_loader``'s sampler indexes)."""

    def __len__(self):
        return 6

    def __getitem__(self, key):
        _, i = key
        g = torch.Generator().manual_seed(i)
        return {"video": torch.randn(3, 4, 32, 32, generator=g), "label": i % 3}


def tiny_fit(out, epochs):
    torch.manual_seed(0)
    model = EgoExoStudent(create_backbone("slow_tiny", width=4), num_actions=3, num_objects=0, ego_head=False,
                          interaction_maps=False)
    cfg = OptimConfig(epochs=epochs, batch_size=2, num_workers=0, lr=0.05, warmup_epochs=1.0)
    return fit(model, TinyClips(), cfg, LossWeights(), out, multilabel=False, log=lambda *_: None)


def scalars(out, tag):
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_epoch_losses_read_back_equal_the_history(tmp_path):
    history = tiny_fit(tmp_path, epochs=2)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    steps = 3  # 6 clips in batches of 2
    epoch_loss = scalars(tmp_path, "epoch/loss")
    assert [s for s, _ in epoch_loss] == [steps - 1, 2 * steps - 1]  # each epoch's last step
    assert [v for _, v in epoch_loss] == pytest.approx([h["loss"] for h in history], rel=1e-6)
    assert [v for _, v in scalars(tmp_path, "epoch/loss_action")] == pytest.approx(
        [h["loss_action"] for h in history], rel=1e-6)
    step_loss = scalars(tmp_path, "step/loss")
    assert [s for s, _ in step_loss] == list(range(2 * steps))
    # the epoch mean is the mean of its steps' values
    assert sum(v for _, v in step_loss[:steps]) / steps == pytest.approx(history[0]["loss"], rel=1e-5)
    lr = [v for _, v in scalars(tmp_path, "step/lr")]
    assert lr[0] == pytest.approx(0.01) and lr[1] > lr[0]  # warm-up from warmup_start_lr
    wait = [v for _, v in scalars(tmp_path, "step/data_wait_fraction")]
    assert all(0.0 <= w <= 1.0 for w in wait)
    assert all(v > 0 for _, v in scalars(tmp_path, "step/clips_per_s"))


def test_a_resume_replaces_the_events_after_its_checkpoint(tmp_path):
    tiny_fit(tmp_path, epochs=2)
    # As if the run had died after logging epoch 2 but before its checkpoint: back to epoch 1.
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    state.update(epoch=1, history=state["history"][:1])
    torch.save(state, tmp_path / "last.pt")
    # A resumed run is a new process: its event file's name (seconds, host, pid, then a per-process
    # counter) sorts after the first's. In one process, only the counter differs, and "10" < "9".
    time.sleep(1.1)
    history = tiny_fit(tmp_path, epochs=2)
    assert [s for s, _ in scalars(tmp_path, "step/loss")] == list(range(6))  # once each, not twice
    assert [v for _, v in scalars(tmp_path, "epoch/loss")] == pytest.approx([h["loss"] for h in history], rel=1e-6)


def test_channels_last_trains_the_same_weights(tmp_path):
    """``optim.channels_last`` changes the memory layout only: same losses and weights, to float error."""
    runs = {}
    for cl in (False, True):
        torch.manual_seed(0)
        model = EgoExoStudent(create_backbone("slow_tiny", width=4), num_actions=3, num_objects=0, ego_head=False,
                              interaction_maps=False)
        cfg = OptimConfig(epochs=2, batch_size=2, num_workers=0, lr=0.05, channels_last=cl)
        history = fit(model, TinyClips(), cfg, LossWeights(), tmp_path / str(cl), multilabel=False, log=lambda *_: None)
        runs[cl] = (history, model.state_dict())
    assert [h["loss"] for h in runs[True][0]] == pytest.approx([h["loss"] for h in runs[False][0]], rel=1e-4)
    for k, v in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][k], v, rtol=1e-4, atol=1e-5)
    convs = [v for k, v in runs[True][1].items() if v.dim() == 5]
    assert convs and all(v.is_contiguous(memory_format=torch.channels_last_3d) for v in convs)


def _tiny_model():
    torch.manual_seed(0)
    return EgoExoStudent(create_backbone("slow_tiny", width=4), num_actions=3, num_objects=0, ego_head=False,
                         interaction_maps=False)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")
def test_cpu_bf16_runs_the_forward_in_bf16_with_fp32_losses(tmp_path):
    """``optim.cpu_bf16``: convolutions compute in bf16 under autocast, the weights stay fp32, and
    the first step's loss (same weights, same clips) matches fp32 to bf16 precision."""
    runs = {}
    for bf16 in (False, True):
        model = _tiny_model()
        dtypes = []
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
        conv.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
        cfg = OptimConfig(epochs=1, batch_size=2, num_workers=0, lr=0.05, cpu_bf16=bf16)
        history = fit(model, TinyClips(), cfg, LossWeights(), tmp_path / str(bf16), multilabel=False,
                      log=lambda *_: None)
        runs[bf16] = (history, set(dtypes), {p.dtype for p in model.parameters()})
    assert runs[False][1] == {torch.float32} and runs[True][1] == {torch.bfloat16}
    assert runs[True][2] == {torch.float32}
    step = scalars(tmp_path / "True", "step/loss")[0][1], scalars(tmp_path / "False", "step/loss")[0][1]
    assert step[0] == pytest.approx(step[1], rel=2e-2) and step[0] != step[1]


def test_cpu_bf16_on_a_cpu_without_it_trains_in_fp32_and_says_so(tmp_path, monkeypatch):
    import student.train as train

    monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)
    said, dtypes = [], []
    model = _tiny_model()
    next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d)).register_forward_hook(
        lambda _m, _i, out: dtypes.append(out.dtype))
    fit(model, TinyClips(), OptimConfig(epochs=1, batch_size=2, num_workers=0, cpu_bf16=True), LossWeights(),
        tmp_path, multilabel=False, log=said.append)
    assert set(dtypes) == {torch.float32}
    assert [m for m in said if "cpu_bf16" in m] == [
        "optim.cpu_bf16: this CPU has no native bf16 (AMX / AVX512-BF16); training in fp32"]
    # A checkpoint written in bf16 and resumed here (no bf16) says the precision changed.
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["precision"] == "fp32"
    state.update(epoch=0, history=[], precision="bf16")
    torch.save(state, tmp_path / "last.pt")
    said.clear()
    fit(_tiny_model(), TinyClips(), OptimConfig(epochs=1, batch_size=2, num_workers=0, cpu_bf16=True), LossWeights(),
        tmp_path, multilabel=False, log=said.append)
    assert f"{tmp_path / 'last.pt'} was trained in bf16 and goes on in fp32 here: the weights will differ from an " \
           "uninterrupted run's" in said


class NaNClips(TinyClips):
    """TinyClips whose clip 4 turns NaN from the second epoch on."""

    clips = [type("Ref", (), {"path": f"/videos/clip{i}.mp4"})() for i in range(6)]

    def __getitem__(self, key):
        epoch, i = key
        item = {**super().__getitem__(key), "index": i}
        if epoch >= 1 and i == 4:
            item["video"] = torch.full_like(item["video"], float("nan"))
        return item


def test_a_nan_loss_stops_naming_step_and_clips_and_keeps_the_last_checkpoint(tmp_path):
    from pipeline.errors import PipelineError

    torch.manual_seed(0)
    model = EgoExoStudent(create_backbone("slow_tiny", width=4), num_actions=3, num_objects=0, ego_head=False,
                          interaction_maps=False)
    cfg = OptimConfig(epochs=3, batch_size=2, num_workers=2, lr=0.05)
    with pytest.raises(PipelineError, match=r"non-finite loss \(loss_action\) at epoch 2, step \d; the batch's clips: .*clip4") as e:
        fit(model, NaNClips(), cfg, LossWeights(), tmp_path, multilabel=False, log=lambda *_: None)
    assert "end of epoch 1" in str(e.value)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


class FailingClips(TinyClips):
    """TinyClips whose clip ``fail_at`` raises in epoch ``fail_epoch``: a run that dies mid-epoch."""

    def __init__(self, fail_epoch, fail_at):
        self.fail_epoch, self.fail_at = fail_epoch, fail_at

    def __getitem__(self, key):
        if key == (self.fail_epoch, self.fail_at):
            raise RuntimeError("killed")
        return super().__getitem__(key)


def resumable_fit(out, data, workers):
    torch.manual_seed(0)
    model = EgoExoStudent(create_backbone("slow_tiny", width=4), num_actions=3, num_objects=0, ego_head=False,
                          interaction_maps=False, dropout=0.5)  # dropout draws from torch's generator
    cfg = OptimConfig(epochs=3, batch_size=2, num_workers=workers, lr=0.05, checkpoint_every_steps=1)
    history = fit(model, data, cfg, LossWeights(), out, multilabel=False, log=lambda *_: None)
    return model.state_dict(), history


@pytest.mark.parametrize("fail_epoch, fail_step", [(1, 2), (2, 1), (1, 0)])
def test_a_run_stopped_mid_epoch_resumes_to_the_same_weights(tmp_path, fail_epoch, fail_step):
    """Checkpoints every step hold the step, the epoch's loss sums and torch's random state: a run
    that died mid-epoch (through DataLoader workers, with dropout) resumes to the uninterrupted
    run's weights and history exactly."""
    from student.dataset import EpochSampler

    sampler = EpochSampler(6, seed=0)
    sampler.set_epoch(fail_epoch)
    fail_at = list(sampler)[2 * fail_step][1]  # the first clip of step ``fail_step`` (batches of 2)
    whole, whole_history = resumable_fit(tmp_path / "whole", TinyClips(), workers=2)
    with pytest.raises(RuntimeError, match="killed"):
        resumable_fit(tmp_path / "cut", FailingClips(fail_epoch, fail_at), workers=2)
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (fail_epoch, fail_step)  # the steps before it were saved
    resumed, history = resumable_fit(tmp_path / "cut", TinyClips(), workers=2)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(history) == drop(whole_history)
    # and the TensorBoard curve has each step once
    assert [s for s, _ in scalars(tmp_path / "cut", "step/loss")] == list(range(9))


def test_optim_compile_trains_through_torch_compile_and_saves_plain_names(tmp_path, monkeypatch):
    """``optim.compile`` runs every training step through ``torch.compile``'s module (recorded here
    with a stand-in that calls the module: compiling itself takes minutes on this CPU), and the
    checkpoint keeps the model's own parameter names."""
    compiled, calls = [], []

    def fake_compile(module):
        compiled.append(module)

        def run(*args, **kwargs):
            calls.append(1)
            return module(*args, **kwargs)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    torch.manual_seed(0)
    model = EgoExoStudent(create_backbone("slow_tiny", width=4), num_actions=3, num_objects=0, ego_head=False,
                          interaction_maps=False)
    cfg = OptimConfig(epochs=1, batch_size=2, num_workers=0, lr=0.05, compile=True)
    fit(model, TinyClips(), cfg, LossWeights(), tmp_path, multilabel=False, log=lambda *_: None)
    assert compiled == [model] and len(calls) == 3  # 6 clips in batches of 2
    state = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert state.keys() == model.state_dict().keys() and not any(k.startswith("_orig_mod") for k in state)


@pytest.mark.parametrize("lr", [1e5, 1e3])
def test_weights_sent_to_inf_are_never_saved(tmp_path, lr):
    """An lr that blows the weights up (finite losses at first) stops the run at the first
    non-finite gradient or weight; every checkpoint written, per step, holds finite weights."""
    from pipeline.errors import PipelineError

    torch.manual_seed(0)
    model = EgoExoStudent(create_backbone("slow_tiny", width=4), num_actions=3, num_objects=0, ego_head=False,
                          interaction_maps=False)
    cfg = OptimConfig(epochs=20, batch_size=2, num_workers=0, lr=lr, checkpoint_every_steps=1)
    with pytest.raises(PipelineError, match=r"non-finite (loss|gradient|weights after the step)") as e:
        fit(model, TinyClips(), cfg, LossWeights(), tmp_path, multilabel=False, log=lambda *_: None)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert f"{tmp_path / 'last.pt'} (" in str(e.value) and "is kept, with finite weights" in str(e.value)
    assert "new --out with init=" in str(e.value)


def test_a_damaged_last_checkpoint_is_one_line_naming_it(tmp_path):
    from pipeline.errors import PipelineError

    tiny_fit(tmp_path, epochs=1)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(PipelineError, match=r"cannot resume from .*last.pt .*Delete it to start this run over"):
        tiny_fit(tmp_path, epochs=2)


def test_out_of_range_optimiser_values_are_config_errors():
    for bad in ({"lr": float("nan")}, {"lr": 1e39}, {"num_workers": -1}, {"momentum": float("inf")}):
        with pytest.raises(ValueError, match="optim"):
            OptimConfig(**bad).validate()
