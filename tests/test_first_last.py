"""bits.first_last: the first and last layers' bits, resolved with the slots and recorded in ptq_config."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from ptq.cli import compose_config
from ptq.errors import PTQError
from ptq.quant.config import resolve_ptq_config
from ptq.quant.first_last import FIRST_LAST_SLOTS


def _pcfg(*overrides):
    return resolve_ptq_config(compose_config(["logger=none", "bits=w4a4", *overrides]))


def test_off_by_default_and_eight_bit_first_last():
    off = _pcfg("quantizer=repq_vit")
    on = _pcfg("quantizer=repq_vit", "bits.first_last=8")
    assert off.first_last is None and on.first_last == 8 and on.to_dict()["first_last"] == 8
    for name, spec in on.slots.items():
        if name in FIRST_LAST_SLOTS:
            assert spec.bits == 8, name
        else:
            assert spec == off.slots[name], name  # nothing else moves
    assert off.slots["head_weight"].bits == 4 and off.slots["conv_weight"].bits == 4


def test_float_operand_stays_float_and_fallback_slot_gets_the_bits():
    """BasePTQ leaves the image float: the switch sets bits, it does not quantize it; a head_weight that falls back
    to `weight` still gets the first/last bits (the weight slot itself does not)."""
    cfg = compose_config(["logger=none", "bits=w4a4", "quantizer=base_ptq", "bits.first_last=8",
                          "quantizer.slots.head_weight.enabled=false"])
    p = resolve_ptq_config(cfg)
    assert p.slots["image"].quantizer is None
    assert p.slots["head_weight"].slot == "weight" and p.slots["head_weight"].bits == 8
    assert p.slots["weight"].bits == 4


def test_bad_first_last_is_a_one_line_error():
    cfg = compose_config(["logger=none", "bits=w4a4", "quantizer=repq_vit"])
    OmegaConf.update(cfg, "bits.first_last", 1)
    with pytest.raises(PTQError, match="bits.first_last=1"):
        resolve_ptq_config(cfg)
