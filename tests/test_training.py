"""Training-script checks: a tiny model trained for a few steps with the transformers Trainer callback,
the Lightning callback and a hand-written loop logs wafers and predicted tokens/s, and a broken
budget warns, stops or raises."""
from __future__ import annotations

import json

import pytest
import torch

from wafercc.training import BudgetExceeded, WaferBudget, WaferccCallback, WaferccLightningCallback

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, head_dim=16)


def _llama():
    import transformers
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY))


class _Tokens(torch.utils.data.Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        ids = torch.randint(0, TINY["vocab_size"], (16,), generator=g)
        return {"input_ids": ids, "labels": ids.clone()}


def _train(tmp_path, budget, steps=4):
    import transformers
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=steps,
                                          per_device_train_batch_size=2, logging_steps=1, report_to=[],
                                          use_cpu=True, save_strategy="no", disable_tqdm=True)
    model = _llama()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Tokens(),
                                   callbacks=[WaferccCallback(budget)])
    trainer.train()
    moved = any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    return trainer, moved


def test_trainer_callback_logs_wafers_and_tokens_per_s(tmp_path, monkeypatch):
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path / "cache"))
    log = tmp_path / "wafercc.jsonl"
    budget = WaferBudget(max_wafers=1, min_tokens_per_s=1.0, every=2, log_file=str(log))
    trainer, moved = _train(tmp_path, budget)
    assert moved and trainer.state.global_step == 4                      # it really trained
    logged = [h for h in trainer.state.log_history if "wafercc/wafers" in h]
    assert [h["step"] for h in logged] == [2, 4]
    assert all(h["wafercc/wafers"] == 1 and h["wafercc/tokens_per_s_per_user"] > 0 and h["wafercc/ok"]
               for h in logged)
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 4] and [r["cached"] for r in recs] == [False, True]
    assert recs[0]["tokens_per_s_per_user"] == recs[1]["tokens_per_s_per_user"]     # same architecture
    assert recs[1]["seconds"] < 2.0 and recs[0]["source"] == "estimate"


def test_trainer_callback_stops_on_a_broken_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path / "cache"))
    budget = WaferBudget(min_tokens_per_s=1e12, every=2, on_violation="stop")
    with pytest.warns(UserWarning, match="below the budget"):
        trainer, _ = _train(tmp_path, budget, steps=6)
    assert trainer.state.global_step == 2 and not budget.history[0]["ok"]


def test_plain_loop_checks_every_n_steps_and_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path / "cache"))
    model = _llama()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    budget = WaferBudget(max_wafers=1, every=3)
    records = []
    for step in range(1, 7):
        batch = _Tokens()[step]
        loss = model(input_ids=batch["input_ids"][None], labels=batch["labels"][None]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        rec = budget.maybe_check(model, step)
        if rec is not None:
            records.append(rec)
    assert [r["step"] for r in records] == [3, 6] and all(r["ok"] and r["wafers"] == 1 for r in records)
    strict = WaferBudget(max_wafers=1, options={"context": 10 ** 8}, on_violation="raise")
    with pytest.raises(BudgetExceeded, match="no plan fits 1 wafer"):
        strict.check(model, step=7)
    # a model that cannot be compiled breaks the budget (warns) instead of crashing the loop
    with pytest.warns(UserWarning, match="compile failed"):
        rec = WaferBudget(options={"dtype": "fp7"}).check(model, step=8)
    assert not rec["ok"] and rec["wafers"] is None


def test_lightning_callback_logs(tmp_path, monkeypatch):
    L = pytest.importorskip("lightning")
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path / "cache"))

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = _llama()

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

        def training_step(self, batch, i):
            return self.model(input_ids=batch["input_ids"], labels=batch["labels"]).loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    example = (torch.zeros(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long))
    budget = WaferBudget(max_wafers=1, every=2)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.callbacks.append(WaferccLightningCallback(budget, example))
    trainer.fit(Module(), torch.utils.data.DataLoader(_Tokens(), batch_size=2))
    assert [r["step"] for r in budget.history] == [2, 4] and all(r["ok"] for r in budget.history)
    assert float(trainer.callback_metrics["wafercc/wafers"]) == 1.0
    assert float(trainer.callback_metrics["wafercc/tokens_per_s_per_user"]) > 0
    assert budget.history[1]["cached"]
