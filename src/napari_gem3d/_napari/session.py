"""Per-viewer state shared by the GEM-3D widgets (one :class:`Session` per viewer, held weakly).

A session holds the loaded model (bundles cached by path), the device, the current informed slice,
the last generation's inputs (for "Run again"), mask version counters (an edit marks results made
from an older version as stale), the result layers, and the viewer's one running job.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from .layers import RESULT_KEY

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ..models import ModelBundle
    from ..sampling import InformedSlice
    from .jobs import Job

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
DEVICES = ("auto", "cpu", "cuda", "mps")
STALE_SUFFIX = " [stale]"


def real_layer(layer):
    """The layer behind napari's plugin proxy (``PublicOnlyProxy``): a weak reference to the proxy dies
    with the proxy, which napari makes afresh for every access from a plugin dock."""
    return getattr(layer, "__wrapped__", layer)


@dataclass
class InformedChoice:
    """The informed slice picked or generated in the informed-slice widget, with a description."""

    informed: InformedSlice
    description: str
    position: float | None = None  # relative position it belongs to (the natural start position)
    index: int | None = None  # a picked slice: its index along the model's slice axis, exactly
    num_slices: int | None = None  # ... of this many (the start slice is ``index`` where the mask has as many)
    layer_name: str = ""  # the image layer it was picked from

    def start_for(self, num_slices: int) -> tuple[int, bool]:
        """The start slice for a mask with ``num_slices`` slices: the picked index itself when the counts
        match (exact, no float round trip), else the same relative position; and whether it is exact."""
        from ..sampling.informed import relative_index

        if self.index is not None and self.num_slices == num_slices:
            return int(self.index), True
        position = self.position if self.position is not None else 0.5
        return relative_index(float(position), num_slices), False


@dataclass
class RunSnapshot:
    """Everything needed to repeat a generation with another seed (frozen inputs + form values)."""

    mask_layer: Any  # weakref to the mask layer the run used
    image_layer: Any  # weakref or None
    values: dict[str, Any] = field(default_factory=dict)


def cache_dir() -> Path:
    """Where converted official checkpoints go: $GEM3D_CACHE_DIR, else the user cache folder."""
    env = os.environ.get("GEM3D_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-gem3d"))


def default_model_path() -> Path | None:
    """The bundled demo model, if this installation has it."""
    from .. import demo_model_path

    path = demo_model_path()
    return path if (path / "config.json").is_file() else None


def available_devices() -> dict[str, str | None]:
    """Device name -> None when usable, else a how-to message (for greyed-out choices)."""
    import torch

    out: dict[str, str | None] = {"auto": None, "cpu": None}
    out["cuda"] = (
        None
        if torch.cuda.is_available()
        else (
            "CUDA is not available in this torch build. Install a CUDA build of torch (see "
            "https://pytorch.org/get-started/locally/) into this environment, then restart napari."
        )
    )
    mps = getattr(torch.backends, "mps", None)
    out["mps"] = (
        None
        if (mps is not None and mps.is_available())
        else ("MPS (Apple GPU) is only available on Apple silicon Macs with a recent torch.")
    )
    return out


def _checkpoint_kind(path: Path) -> str:
    """'volume', 'base' or 'slice' from the first UNet convolution's input channels (12, 8, 4)."""
    from ..models.convert import read_checkpoint

    state = read_checkpoint(path)
    weight = state.get("model.diffusion_model.input_blocks.0.0.weight")
    if weight is None:
        raise ValueError(f"{path.name}: no GEM-3D UNet inside (model.diffusion_model.* keys are missing)")
    kind = {12: "volume", 8: "base", 4: "slice"}.get(int(weight.shape[1]))
    if kind is None:
        raise ValueError(
            f"{path.name}: a UNet with {int(weight.shape[1])} input channels is not a GEM-3D model"
        )
    return kind


def _sidecar_params(path: Path) -> dict | None:
    """Official constructor params from ``<checkpoint stem>.params.json`` beside it (like the CLI's
    ``--params``), for checkpoints that were not trained with the published configuration."""
    import json

    sidecar = path.with_name(f"{path.stem}.params.json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else None


def model_loading_steps(path: str | os.PathLike, cache: Path | None = None):
    """Generator: yields progress messages, returns the loaded bundle (on the CPU). Qt-free.

    ``path`` is a bundle folder, or an official ``.ckpt`` that is converted once into the cache folder
    (keyed by its path, size and modification time) and loaded from there; constructor params other
    than the published ones can sit beside it as ``<stem>.params.json``.
    """
    from ..models import load_bundle

    path = Path(path)
    folder = path
    if not path.is_dir():
        from ..models.convert import convert_official  # (only for a checkpoint: it imports the official code)

        if path.suffix.lower() not in (".ckpt", ".pt", ".pth"):
            raise ValueError(
                f"{path.name}: choose a model bundle folder (config.json + *.safetensors) or an "
                "official GEM-3D .ckpt checkpoint"
            )
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        folder = (cache or cache_dir()) / "converted" / f"{path.stem}-{key}"
        if not (folder / "config.json").is_file():
            yield f"Reading {path.name} (weights only: no code in it is run)"
            kind = _checkpoint_kind(path)
            if kind == "slice":
                raise ValueError(
                    f"{path.name} is a slice (informed-slice) model; a bundle needs a volume model. "
                    "Convert both: gem3d convert-official --volume VOLUME.ckpt --slice SLICE.ckpt "
                    "--out BUNDLE, then load BUNDLE"
                )
            yield f"Converting {path.name} ({kind} model) into {folder}"
            folder.parent.mkdir(parents=True, exist_ok=True)
            convert_official(folder, **{kind: path}, params=_sidecar_params(path))
    yield f"Loading model {folder.name}"
    return load_bundle(folder, device="cpu")


def warm_up_checks() -> None:
    """Import what a first Run imports, while the first GEM-3D dock opens, so the Run does not freeze the
    viewer for it: the domain check's Otsu threshold (skimage.filters) and the model-grid resampling
    (skimage.transform) pull in scipy.ndimage and skimage, 0.2-0.3 s. Not in a worker: an import holds the
    interpreter lock throughout, so the GUI thread would stall just the same, at an unpredictable moment."""
    # (skimage loads lazily: only taking the function out of the module imports it)
    from skimage.filters import threshold_otsu  # noqa: F401
    from skimage.transform import resize  # noqa: F401

    from .. import domain, masks, volume  # noqa: F401
    from ..make_mask import roles  # noqa: F401  (the contrast check finds the tissue labels by name)


def load_model_files(path: str | os.PathLike, cache: Path | None = None):
    """:func:`model_loading_steps` run to the end (no GUI)."""
    from ..sampling.pipeline import run_to_end

    return run_to_end(model_loading_steps(path, cache))


class Session:
    """State of one viewer's GEM-3D widgets. Get it with :func:`get_session`."""

    model_changed = Signal(object)  # the new ModelBundle (or None)
    informed_changed = Signal(object)  # InformedChoice or None
    mask_edited = Signal(object, int)  # mask layer, new version
    job_changed = Signal(object)  # the running Job or None
    results_changed = Signal()
    loading_changed = Signal(bool)  # the bundled model is loading in a worker (True) / done (False)

    def __init__(self, viewer: napari.Viewer):
        self._viewer = weakref.ref(viewer)
        self.bundles: dict[str, ModelBundle] = {}
        self.bundle: ModelBundle | None = None
        self.device: str = "auto"
        self.informed: InformedChoice | None = None
        self.last_run: RunSnapshot | None = None
        self.job: Job | None = None
        self.loading = False
        self._waiting: list = []  # (then, on_error) of docks waiting for the model to load
        self._versions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._results: list[tuple[weakref.ref, weakref.ref, bytes]] = []  # (result, mask, mask digest)
        self._recheck: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # mask layer -> debounced check
        warm_up_checks()  # (once per viewer, as its first GEM-3D dock opens)

    @property
    def viewer(self) -> napari.Viewer | None:
        return self._viewer()

    # ------------------------------------------------------------------------------------- model
    def set_bundle(self, bundle: ModelBundle, key: str | None = None) -> None:
        if key:
            self.bundles[key] = bundle
        self.bundle = bundle
        self.model_changed.emit(bundle)

    def cached(self, path: str | os.PathLike) -> ModelBundle | None:
        return self.bundles.get(str(Path(path).resolve()))

    def when_model_ready(self, then, *, status=None, on_error=None):
        """Call ``then(bundle)`` with the current model, on the GUI thread; returns what it returns.

        With no model loaded yet, the bundled demo model first loads in a worker (the viewer stays
        responsive; ``status`` gets "Loading the model…", ``loading_changed`` fires) and ``then`` runs when
        it is ready; this call then returns None. Docks that ask while it loads are all answered.
        """
        if self.bundle is not None:
            return then(self.bundle)
        default = default_model_path()
        if default is None:
            raise ValueError(
                "No model is loaded and this installation has no bundled demo model: use 'Load model…' "
                "to choose a model bundle folder or an official GEM-3D .ckpt."
            )
        if status is not None:
            status("Loading the model (first use; a few seconds)…")
        self._waiting.append((then, on_error))
        if not self.loading:
            self.loading = True
            self.loading_changed.emit(True)
            self.load_model(default, on_done=self._model_ready, on_error=self._model_failed)
        return None

    def _model_ready(self, bundle) -> None:
        waiting, self._waiting = self._waiting, []
        self.loading = False
        self.loading_changed.emit(False)
        for then, on_error in waiting:
            try:
                then(bundle)
            except Exception as exc:  # noqa: BLE001 - a dock's failure is its own: report it, serve the rest
                if on_error is None:
                    raise
                on_error(exc)

    def _model_failed(self, exc) -> None:
        from .jobs import _report

        waiting, self._waiting = self._waiting, []
        self.loading = False
        self.loading_changed.emit(False)
        if not any(on_error for _, on_error in waiting):
            _report(exc, "model loading")
        for _, on_error in waiting:
            if on_error is not None:
                on_error(exc)

    def load_model(self, path: str | os.PathLike, on_done=None, on_error=None):
        """Load (converting an official .ckpt first) in a worker; the result becomes the current model."""
        from napari.qt.threading import create_worker

        key = str(Path(path).resolve())
        if key in self.bundles:
            self.set_bundle(self.bundles[key], key)
            if on_done:
                on_done(self.bundles[key])
            return None

        from .jobs import guarded, hold_gc_while

        def load_steps():
            return (yield from guarded(model_loading_steps(path)))

        # napari's activity list only for a checkpoint to convert (minutes, once): a bundle loads in about a
        # second, the docks say "Loading…" themselves, and building the list's first progress bar on the GUI
        # thread while the worker holds the interpreter froze the viewer for up to 0.4 s
        progress = None if Path(path).is_dir() else {"total": 0, "desc": f"Loading model {Path(path).name}"}
        worker = create_worker(load_steps, _start_thread=False, _ignore_errors=True, _progress=progress)

        def message(text: str) -> None:
            """In napari's activity list; a converted checkpoint (minutes, once) also gets a notification
            (plain loading does not: the docks say "Loading…" themselves, a toast would cover the canvas)."""
            from napari.utils.notifications import show_info

            if getattr(worker, "pbar", None) is not None:
                worker.pbar.set_description(text)
            if not text.startswith("Loading model"):
                show_info(text)

        worker.yielded.connect(message)

        def returned(bundle):
            self.set_bundle(bundle, key)
            if on_done:
                on_done(bundle)

        worker.returned.connect(returned)
        if on_error:
            worker.errored.connect(on_error)
        hold_gc_while(worker)
        worker.start()
        return worker

    def release_memory(self) -> str:
        """Move the models to the CPU, drop cached ones, and give cached device memory back."""
        import torch

        from ..sampling.device import release_memory

        devices = {b.device for b in self.bundles.values()} | ({self.bundle.device} if self.bundle else set())
        for bundle in self.bundles.values():
            bundle.to("cpu")
        if self.bundle is not None:
            self.bundle.to("cpu")
            self.bundles = {k: b for k, b in self.bundles.items() if b is self.bundle}
        else:
            self.bundles.clear()
        for i, device in enumerate(sorted(devices | {torch.device("cpu")}, key=str)):
            release_memory(torch.device(device), collect=i == 0)  # one garbage collection is enough
        freed = sorted(str(d) for d in devices if d.type != "cpu")
        return (
            f"Released memory on {', '.join(freed)}" if freed else "Models are on the CPU; nothing to release"
        )

    # -------------------------------------------------------------------------------- informed
    def set_informed(self, choice: InformedChoice | None) -> None:
        self.informed = choice
        self.informed_changed.emit(choice)

    # ----------------------------------------------------------------------------- mask versions
    def mask_version(self, layer) -> int:
        return self._versions.get(real_layer(layer), 0)

    def watch_mask(self, layer) -> None:
        """Follow edits of ``layer``: painting, lesion tools and replaced data count as edits (a new version,
        ``mask_edited``); after any change of its content, undo and redo included, each result made from it
        is marked stale, or unmarked when the mask is back to the content the result was made from."""
        layer = real_layer(layer)
        if layer in self._versions:
            return
        self._versions[layer] = 0
        ref = weakref.ref(layer)

        def bump(event=None):
            target = ref()
            if target is not None:
                self.bump_mask(target)

        def recheck(event=None):  # undo/redo only refresh the layer
            target = ref()
            if target is not None and any(m() is target for _, m, _ in self._results):
                self._recheck_later(target)

        layer.events.paint.connect(bump)
        layer.events.data.connect(bump)
        layer.events.set_data.connect(recheck)

    def bump_mask(self, layer) -> int:
        """An edit of ``layer``: its results are stale now; a content check follows once the edits pause
        (napari announces a paint before it writes the voxels, and a paint may change nothing)."""
        layer = real_layer(layer)
        version = self._versions.get(layer, 0) + 1
        self._versions[layer] = version
        for result, mask, _ in self._results:
            if mask() is layer and result() is not None:
                self._set_stale(result(), True)
        self._recheck_later(layer)
        self.mask_edited.emit(layer, version)
        return version

    def _recheck_later(self, layer) -> None:
        if layer not in self._recheck:
            ref = weakref.ref(layer)  # (the check must not keep the layer alive)
            self._recheck[layer] = _debounced(lambda: self._restale(ref()))
        self._recheck[layer]()

    def add_result(self, result_layer, mask_layer) -> None:
        """Remember which mask (and which content of it) a result layer was made from."""
        result_layer, mask_layer = real_layer(result_layer), real_layer(mask_layer)
        self.watch_mask(mask_layer)
        self._results.append((weakref.ref(result_layer), weakref.ref(mask_layer), mask_digest(mask_layer)))
        self.results_changed.emit()

    def renew_result(self, result_layer, mask_layer) -> None:
        """``result_layer`` now matches the current ``mask_layer`` (after a local regeneration): not stale."""
        result_layer, mask_layer = real_layer(result_layer), real_layer(mask_layer)
        digest = mask_digest(mask_layer)
        self._results = [(r, m, digest if r() is result_layer else d) for r, m, d in self._results]
        self._set_stale(result_layer, False)

    def results(self) -> list:
        """Live result layers, oldest first."""
        alive = [(r(), m(), d) for r, m, d in self._results]
        self._results = [
            (weakref.ref(r), weakref.ref(m), d) for r, m, d in alive if r is not None and m is not None
        ]
        return [r for r, _, _ in alive if r is not None]

    def _restale(self, mask_layer) -> None:
        """Mark each result of ``mask_layer`` stale when the mask's content differs from its own, else not."""
        if mask_layer is None:
            return
        mask_layer = real_layer(mask_layer)
        mine = [(r(), d) for r, m, d in self._results if m() is mask_layer and r() is not None]
        if not mine:
            return
        digest = mask_digest(mask_layer)
        for result, made_with in mine:
            self._set_stale(result, made_with != digest)

    @staticmethod
    def _set_stale(result, stale: bool) -> None:
        info = result.metadata.setdefault(RESULT_KEY, {})
        if bool(info.get("stale")) == stale:
            return
        info["stale"] = stale
        if stale and not result.name.endswith(STALE_SUFFIX):
            result.name = result.name + STALE_SUFFIX
        elif not stale and result.name.endswith(STALE_SUFFIX):
            result.name = result.name[: -len(STALE_SUFFIX)]

    # -------------------------------------------------------------------------------------- jobs
    def set_job(self, job: Job | None) -> None:
        self.job = job
        self.job_changed.emit(job)

    def cancel_job(self) -> None:
        if self.job is not None:
            self.job.cancel()


def mask_digest(layer) -> bytes:
    """A fingerprint of a mask layer's content (16 bytes of BLAKE2b over its voxels, shape and type)."""
    data = np.ascontiguousarray(np.asarray(layer.data))
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{data.shape}{data.dtype.str}".encode())
    h.update(memoryview(data).cast("B"))
    return h.digest()


def _debounced(fn, ms: int = 250):
    from superqt.utils import qdebounced

    return qdebounced(fn, timeout=ms)


def get_session(viewer: napari.Viewer) -> Session:
    """The viewer's session (created on first use; it goes away with the viewer)."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = Session(viewer)
        _connect_about_to_quit()
    return session


_QUIT_CONNECTED = False


def _cancel_all_jobs() -> None:
    for session in list(_SESSIONS.values()):
        session.cancel_job()


def _connect_about_to_quit() -> None:
    """Cancel every running job when the application quits (closeEvent is not reliable then)."""
    global _QUIT_CONNECTED
    if _QUIT_CONNECTED:
        return
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(_cancel_all_jobs)
        _QUIT_CONNECTED = True
