//! `tracemark._native`: the tracemark library for Python (PyO3). Glue only: arrays in and
//! out, the library's pipeline in between (the same checks as the command-line tools), the
//! GIL released for the heavy work. The Python package (`tracemark/__init__.py`) adds
//! `scan` over Dask on top.

use std::path::{Path, PathBuf};

use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use rayon::prelude::*;
use tracemark::SecretKey;
use tracemark::ledger::Ledger;
use tracemark::mark::detect::DetectOptions;
use tracemark::mark::embed::EmbedOptions;
use tracemark::pipeline::{Examiner as LibExaminer, StampOptions, Stamper};
use tracemark::raster::{Raster, Samples};
use tracemark::report::{ErrorRecord, parse_payload, sanitize};

pyo3::create_exception!(
    tracemark,
    TracemarkError,
    PyException,
    "A file, array, key or ledger tracemark refuses; the message is the command-line tools' one line."
);

/// The library's error as the CLI prints it (one line, control characters escaped).
fn to_py(e: tracemark::Error) -> PyErr {
    TracemarkError::new_err(sanitize(&e.to_string()))
}

/// A secret key, loaded from its file. It cannot be pickled: a key is never sent over a
/// network by this package (give workers the key file's path instead).
#[pyclass(module = "tracemark", frozen)]
struct Key {
    key: SecretKey,
    path: PathBuf,
}

#[pymethods]
impl Key {
    /// Loads a key file made by `tracemark-embed keygen` (32 bytes, owner-only).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Key> {
        let key = SecretKey::load_file(&path).map_err(to_py)?;
        Ok(Key { key, path })
    }

    /// Creates a new random key in a new file at `path` (owner-only, mode 0600; an existing
    /// file is never overwritten), as `tracemark-embed keygen` does, and returns it.
    #[staticmethod]
    fn generate(path: PathBuf) -> PyResult<Key> {
        let key = SecretKey::generate().map_err(to_py)?;
        key.create_file(&path).map_err(to_py)?;
        Ok(Key { key, path })
    }

    /// The key's public id (a short hash; the key itself is never shown).
    #[getter]
    fn key_id(&self) -> String {
        self.key.key_id()
    }

    /// The file the key was loaded from.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn __repr__(&self) -> String {
        format!("Key(id {}, bytes redacted)", self.key.key_id())
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "a tracemark.Key is not pickled (it would send the secret key over the network): pass the key file's path to the workers instead",
        ))
    }
}

/// An array's samples as a raster (uint8 or uint16; H x W, or H x W x C with C of 1 to 4).
fn raster_of(array: &Bound<'_, PyAny>) -> PyResult<Raster> {
    let shape_err = |shape: &[usize]| {
        TracemarkError::new_err(format!(
            "array of shape {shape:?}: expected H x W (grey) or H x W x C with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)"
        ))
    };
    let dims = |shape: &[usize]| match *shape {
        [h, w] => Ok((h, w, 1)),
        [h, w, c @ 1..=4] => Ok((h, w, c)),
        _ => Err(shape_err(shape)),
    };
    let raster = |(height, width, channels), samples| Raster {
        width,
        height,
        channels,
        samples,
    };
    if let Ok(a) = array.cast::<PyArrayDyn<u8>>() {
        return Ok(raster(
            dims(a.shape())?,
            Samples::U8(samples_of(&a.readonly())),
        ));
    }
    if let Ok(a) = array.cast::<PyArrayDyn<u16>>() {
        return Ok(raster(
            dims(a.shape())?,
            Samples::U16(samples_of(&a.readonly())),
        ));
    }
    let dtype = array
        .getattr("dtype")
        .map(|d| d.to_string())
        .unwrap_or_else(|_| array.get_type().to_string());
    Err(TracemarkError::new_err(format!(
        "array of type {dtype}: expected a numpy array of uint8 or uint16"
    )))
}

/// An array's samples in row-major order, in this thread's spare buffer (see [`recycle`]):
/// one copy of the memory when the array is C-contiguous (the usual case), element by
/// element otherwise (a strided view, a transposed array).
fn samples_of<T: Spare>(a: &numpy::PyReadonlyArrayDyn<'_, T>) -> Vec<T> {
    let mut v = T::take_spare();
    v.clear();
    match a.as_slice() {
        Ok(s) => v.extend_from_slice(s),
        Err(_) => v.extend(a.as_array().iter().copied()),
    }
    v
}

/// Spare sample buffers kept between calls on one thread: a fresh multi-megabyte buffer is
/// fresh pages from the kernel every time, and faulting them in cost a 2-Mpx RGB stamp
/// about 5 ms (9.6 % over the library's own time, measured by `python/bench/overhead.py`).
trait Spare: numpy::Element + Copy {
    fn take_spare() -> Vec<Self>;
    fn keep_spare(v: Vec<Self>);
}

/// Buffers larger than this are given back to the allocator rather than kept.
const MAX_SPARE_BYTES: usize = 64 << 20;

macro_rules! spare {
    ($t:ty, $slot:ident) => {
        thread_local! {
            static $slot: std::cell::RefCell<Vec<$t>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        impl Spare for $t {
            fn take_spare() -> Vec<$t> {
                $slot.with(|s| std::mem::take(&mut *s.borrow_mut()))
            }
            fn keep_spare(v: Vec<$t>) {
                if v.capacity() * size_of::<$t>() <= MAX_SPARE_BYTES {
                    $slot.with(|s| *s.borrow_mut() = v);
                }
            }
        }
    };
}
spare!(u8, SPARE_U8);
spare!(u16, SPARE_U16);

/// Gives an input raster's buffer back to this thread's spares.
fn recycle(r: Raster) {
    match r.samples {
        Samples::U8(v) => u8::keep_spare(v),
        Samples::U16(v) => u16::keep_spare(v),
    }
}

/// A raster as an array of `shape` (the input's).
fn array_of<'py>(py: Python<'py>, r: Raster, shape: &[usize]) -> PyResult<Bound<'py, PyAny>> {
    Ok(match r.samples {
        Samples::U8(v) => numpy::PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
        Samples::U16(v) => numpy::PyArray1::from_vec(py, v).reshape(shape)?.into_any(),
    })
}

/// A JSON value as Python objects (through the `json` module: the same dict as
/// `json.loads` of the CLI's `--json` line).
fn to_python<'py>(py: Python<'py>, json: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (json,))
}

/// Stamps an array for `payload` at the PSNR target; returns the stamped array (same shape
/// and dtype) or, with `return_record`, `(array, record)` where record is the dict
/// `tracemark-embed --json` prints for a file.
#[pyfunction]
#[pyo3(signature = (array, key, payload = "0123456789abcdef", psnr = 42.0, *, name = "<array>", return_record = false))]
fn stamp<'py>(
    py: Python<'py>,
    array: &Bound<'py, PyAny>,
    key: &Key,
    payload: &str,
    psnr: f64,
    name: &str,
    return_record: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let raster = raster_of(array)?;
    let shape: Vec<usize> = array.getattr("shape")?.extract()?;
    let payload = parse_payload(payload).map_err(to_py)?;
    let options = StampOptions {
        embed: EmbedOptions {
            psnr_db: psnr,
            ..EmbedOptions::default()
        },
        ..StampOptions::default()
    };
    options
        .embed
        .validate()
        .map_err(|e| TracemarkError::new_err(format!("psnr: {}", sanitize(&e.to_string()))))?;
    let name = Path::new(name);
    let stamped =
        py.detach(|| Stamper::new(&key.key, payload, options)?.stamp_in_memory(name, &raster));
    recycle(raster);
    let (marked, record) = stamped.map_err(to_py)?;
    let out = array_of(py, marked, &shape)?;
    if !return_record {
        return Ok(out);
    }
    let record = serde_json::to_string(&record).expect("records serialise");
    Ok((out, to_python(py, &record)?).into_pyobject(py)?.into_any())
}

/// Examines images for one key, optionally resolving what it finds through a ledger (an
/// SQLite file or a PostgreSQL URL, opened read-only and verified once) and against the
/// released images as the publisher keeps them (`originals`: files, as
/// `tracemark-detect --original`). Build one and reuse it: the key's patterns and FFT plans
/// are derived, and the originals read, when it is made.
#[pyclass(module = "tracemark", frozen)]
struct Examiner {
    inner: LibExaminer,
    key_id: String,
}

#[pymethods]
impl Examiner {
    #[new]
    #[pyo3(signature = (key, ledger = None, *, originals = Vec::new()))]
    fn new(
        py: Python<'_>,
        key: &Key,
        ledger: Option<PathBuf>,
        originals: Vec<PathBuf>,
    ) -> PyResult<Examiner> {
        let inner = py
            .detach(|| {
                let mut ex = LibExaminer::new(&key.key, DetectOptions::default());
                if let Some(l) = &ledger {
                    ex = ex.with_ledger(&Ledger::open_verified(l, &key.key)?)?;
                }
                for path in &originals {
                    ex = ex.with_original(path)?;
                }
                Ok::<_, tracemark::Error>(ex)
            })
            .map_err(to_py)?;
        Ok(Examiner {
            inner,
            key_id: key.key.key_id(),
        })
    }

    /// The public id of the examiner's key.
    #[getter]
    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    /// Examines one file (a path) or array; the dict `tracemark-detect --json` prints.
    #[pyo3(signature = (source, *, name = None))]
    fn examine<'py>(
        &self,
        py: Python<'py>,
        source: &Bound<'py, PyAny>,
        name: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let record = if let Some(path) = as_path(source)? {
            py.detach(|| self.inner.examine(&path))
        } else {
            let raster = raster_of(source)?;
            let name = PathBuf::from(name.unwrap_or("<array>"));
            py.detach(|| self.inner.examine_raster(&name, raster))
        }
        .map_err(to_py)?;
        to_python(
            py,
            &serde_json::to_string(&record).expect("records serialise"),
        )
    }

    /// Examines files in parallel (one per thread, the GIL released), in input order. A
    /// file that cannot be examined gives `{"type": "error", "path": ..., "error": ...}`
    /// (the CLI's `--json` error line) and does not stop the others.
    fn examine_many<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let lines: Vec<String> = py.detach(|| {
            paths
                .par_iter()
                .map(|p| {
                    match self.inner.examine(p) {
                        Ok(rec) => serde_json::to_string(&rec),
                        Err(e) => serde_json::to_string(&ErrorRecord {
                            kind: "error".into(),
                            path: p.display().to_string(),
                            error: sanitize(&e.to_string()),
                        }),
                    }
                    .expect("records serialise")
                })
                .collect()
        });
        lines.iter().map(|l| to_python(py, l)).collect()
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "a tracemark.Examiner holds the secret key and is not pickled: build one on each worker from the key file's path",
        ))
    }
}

/// A `str` or `os.PathLike` as a path; `None` for anything else (an array).
fn as_path(source: &Bound<'_, PyAny>) -> PyResult<Option<PathBuf>> {
    if source.is_instance_of::<PyString>() || source.hasattr("__fspath__")? {
        return Ok(Some(source.extract()?));
    }
    Ok(None)
}

/// For `python/bench/overhead.py`: the library calls behind [`stamp`] and
/// [`Examiner::examine`] of an array, timed in Rust (`repeats` times each, after one
/// warm-up), without the Python layer: the array and record conversions, the argument
/// parsing and the GIL hand-over. Returns the median milliseconds of each.
#[pyfunction]
fn _library_times(
    py: Python<'_>,
    array: &Bound<'_, PyAny>,
    key: &Key,
    examiner: &Examiner,
    repeats: usize,
) -> PyResult<(f64, f64)> {
    let raster = raster_of(array)?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    py.detach(|| {
        let time = |f: &dyn Fn() -> tracemark::Result<()>| -> tracemark::Result<f64> {
            f()?;
            let mut v = Vec::with_capacity(repeats);
            for _ in 0..repeats.max(1) {
                let t = std::time::Instant::now();
                f()?;
                v.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok(median(v))
        };
        let name = Path::new("<array>");
        let stamp = time(&|| {
            Stamper::new(&key.key, 0x0123_4567_89ab_cdef, StampOptions::default())?
                .stamp_in_memory(name, &raster)
                .map(drop)
        })?;
        let examine = time(&|| {
            let rec = examiner.inner.examine_raster(name, raster.clone())?;
            serde_json::to_string(&rec).expect("records serialise");
            Ok(())
        })?;
        Ok((stamp, examine))
    })
    .map_err(to_py)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Key>()?;
    m.add_class::<Examiner>()?;
    m.add_function(wrap_pyfunction!(stamp, m)?)?;
    m.add_function(wrap_pyfunction!(_library_times, m)?)?;
    m.add("TracemarkError", m.py().get_type::<TracemarkError>())?;
    Ok(())
}
