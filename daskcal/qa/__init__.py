"""QA reports: what a calibrate run did, as static HTML pages (``daskcal qa``).

:func:`write_qa_report` measures every calibrated CCD of a rerun with Dask (one task per
CCD, :func:`measure_ccd`), matches the stars of each tract between visits
(:func:`repeatability`), flags the CCDs and visits beyond ``n_mad`` MAD of their tract
median (:func:`find_outliers`) and writes ``calibrated/qa/index.html`` (outliers, the
tract trends, the run summary of :func:`run_summary`, configuration and versions) and a
page per visit with its focal-plane maps (:func:`draw_focal_plane`).

Modules: :mod:`.targets` (which CCDs, which files), :mod:`.ccd` with :mod:`.photometry`,
:mod:`.astrometry`, :mod:`.sky` and :mod:`.sources` (per-CCD metrics), :mod:`.repeat`,
:mod:`.tables`, :mod:`.outliers`, :mod:`.summary`, :mod:`.maps` and :mod:`.visit_maps`,
:mod:`.trends`, :mod:`.html` and :mod:`.pages` (templates in ``templates/``),
:mod:`.build` (the Dask graph).
"""

from .build import QAError, QAReport, qa_folder, write_qa_report
from .ccd import measure_ccd
from .maps import draw_focal_plane
from .options import QAOptions
from .outliers import find_outliers
from .repeat import repeatability
from .summary import RunSummary, run_summary

__all__ = [
    "QAError",
    "QAOptions",
    "QAReport",
    "RunSummary",
    "draw_focal_plane",
    "find_outliers",
    "measure_ccd",
    "qa_folder",
    "repeatability",
    "run_summary",
    "write_qa_report",
]
