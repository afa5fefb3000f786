//! The array form: keypoints as a NumPy `.npy` or `.npz` file per view.
//!
//! The keypoint array has shape `[T, K, C]`: row `t` is source frame `t` of the video, `K`
//! the layout's joints, and `C` the channels: `x, y` (2), `x, y, conf` (3) or
//! `x, y, z, conf` (4). An `.npz` may hold the confidence apart, as `conf` of shape
//! `[T, K]`; its keypoint array (named `keypoints`, or the one other array) then holds the
//! coordinates only: `x, y` (2) or `x, y, z` (3). Without any confidence every joint
//! counts as detected. float32 and float64 are read, in C or Fortran order.
//!
//! A frame whose values are all NaN or all zero has no detection: it is masked, never read
//! as zeros (the SAM-3D-Body converter writes a missing frame as NaN). In a frame with a
//! detection, a joint with a NaN value, or (without a confidence) with every coordinate
//! exactly zero, is undetected.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use mvdrive_schemas::layout::{Layout, LAYOUTS};
use npyz::npz::NpzArchive;
use npyz::{NpyFile, Order};

use super::Track;

/// One numeric array read whole, in C order.
struct Array {
    shape: Vec<u64>,
    data: Vec<f32>,
}

/// True for the paths the array form reads: `*.npy` and `*.npz`.
pub fn is_array_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("npy") || e.eq_ignore_ascii_case("npz"))
}

/// Read a `.npy` or `.npz` keypoint file of layout `lay`.
pub fn load_array(path: &Path, lay: Layout) -> Result<Track, String> {
    let shown = path.display();
    let npz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"));
    let (kp, conf) = if npz {
        read_npz(path)?
    } else {
        let f = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
        let npy = NpyFile::new(BufReader::new(f)).map_err(|e| {
            format!("{shown}: not a NumPy .npy array ({e}); write it with numpy.save")
        })?;
        (read_array(path, "", npy)?, None)
    };
    to_track(path, lay, &kp, conf.as_ref())
}

/// The keypoint array and the optional `conf` array of an `.npz`.
fn read_npz(path: &Path) -> Result<(Array, Option<Array>), String> {
    let shown = path.display();
    let mut z = NpzArchive::open(path).map_err(|e| {
        format!("{shown}: not a NumPy .npz archive ({e}); write it with numpy.savez")
    })?;
    let names: Vec<String> = z.array_names().map(String::from).collect();
    let others: Vec<&String> = names.iter().filter(|n| *n != "conf").collect();
    let name = if names.iter().any(|n| n == "keypoints") {
        "keypoints".to_string()
    } else if others.len() == 1 {
        others[0].clone()
    } else {
        return Err(format!(
            "{shown}: cannot tell which array holds the keypoints (it has: {}); name it `keypoints` (and the confidence `conf`)",
            if names.is_empty() { "no arrays".to_string() } else { names.join(", ") }
        ));
    };
    let mut get = |n: &str| -> Result<Option<Array>, String> {
        match z.by_name(n) {
            Ok(Some(a)) => read_array(path, n, a).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(format!(
                "{shown}: array `{n}` cannot be read ({e}); write it with numpy.savez"
            )),
        }
    };
    let kp = get(&name)?.ok_or_else(|| format!("{shown}: array `{name}` is missing"))?;
    let conf = get("conf")?;
    Ok((kp, conf))
}

/// Read a whole array as float32, in C order.
fn read_array<R: Read>(path: &Path, name: &str, a: NpyFile<R>) -> Result<Array, String> {
    let at = if name.is_empty() {
        path.display().to_string()
    } else {
        format!("{} array `{name}`", path.display())
    };
    if a.uses_pickled_array() {
        return Err(format!(
            "{at}: holds pickled Python objects, not numbers (a SAM-3D-Body per-frame file?); convert it with scripts/sam3d_to_npy.py"
        ));
    }
    let shape = a.shape().to_vec();
    let order = a.order();
    let dtype = a.dtype().descr();
    let read_err = |e: std::io::Error| format!("{at}: cannot be read ({e}); is the file complete?");
    let flat: Vec<f32> = match a.try_data::<f32>() {
        Ok(r) => r.collect::<Result<_, _>>().map_err(read_err)?,
        Err(a) => match a.try_data::<f64>() {
            Ok(r) => r
                .map(|v| v.map(|v| v as f32))
                .collect::<Result<_, _>>()
                .map_err(read_err)?,
            Err(_) => {
                return Err(format!(
                    "{at}: dtype {dtype} is not a float; save the keypoints as float32 or float64"
                ))
            }
        },
    };
    let data = match order {
        Order::C => flat,
        Order::Fortran => fortran_to_c(&flat, &shape),
    };
    Ok(Array { shape, data })
}

/// Reorder a column-major (Fortran) array into row-major (C) order.
fn fortran_to_c(flat: &[f32], shape: &[u64]) -> Vec<f32> {
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let mut out = Vec::with_capacity(flat.len());
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..flat.len() {
        // Fortran offset of the C-order position `idx`: first index varies fastest.
        let (mut off, mut stride) = (0, 1);
        for (i, d) in idx.iter().zip(&dims) {
            off += i * stride;
            stride *= d;
        }
        out.push(flat[off]);
        for k in (0..dims.len()).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// Check the shapes against the layout; returns (T, K, C).
fn check_shapes(
    path: &Path,
    lay: Layout,
    kp: &Array,
    conf: Option<&Array>,
) -> Result<(usize, usize, usize), String> {
    let shown = path.display();
    let &[t, k, c] = kp.shape.as_slice() else {
        return Err(format!(
            "{shown}: keypoint array of shape {}; expected [T, K, C] (source frames, joints, channels)",
            shape_text(&kp.shape)
        ));
    };
    let (t, k, c) = (t as usize, k as usize, c as usize);
    if k != lay.len() {
        let fits: Vec<&str> = LAYOUTS
            .iter()
            .filter(|l| l.len() == k)
            .map(|l| l.name)
            .collect();
        let hint = if fits.is_empty() {
            format!("no known layout has {k} joints")
        } else {
            format!("layouts with {k} joints: {}", fits.join(", "))
        };
        return Err(format!(
            "{shown}: {k} joints per frame (shape {}), but keypoint_layout {} has {}; fix keypoint_layout ({hint})",
            shape_text(&kp.shape),
            lay.name,
            lay.len()
        ));
    }
    match conf {
        Some(cf) => {
            if cf.shape != [t as u64, k as u64] {
                return Err(format!(
                    "{shown}: `conf` has shape {}, but the keypoints need [T, K] = [{t}, {k}]",
                    shape_text(&cf.shape)
                ));
            }
            if !(2..=3).contains(&c) {
                return Err(format!(
                    "{shown}: {c} channels next to a `conf` array; expected x, y (2) or x, y, z (3)"
                ));
            }
        }
        None if !(2..=4).contains(&c) => {
            return Err(format!(
                "{shown}: {c} channels; expected x, y (2), x, y, conf (3) or x, y, z, conf (4)"
            ));
        }
        None => {}
    }
    Ok((t, k, c))
}

/// Build the track: one entry per frame with a detection.
fn to_track(path: &Path, lay: Layout, kp: &Array, conf: Option<&Array>) -> Result<Track, String> {
    let (t, k, c) = check_shapes(path, lay, kp, conf)?;
    // Coordinates per joint, and where its confidence is (a channel, the array, none).
    let has_conf_channel = conf.is_none() && c >= 3;
    let dims = if has_conf_channel { c - 1 } else { c };
    if has_conf_channel && c == 3 {
        if let Some(v) = kp.data.chunks(3).map(|j| j[2]).find(|v| *v < 0.0) {
            return Err(format!(
                "{}: channel 3 of [T, K, 3] is read as a confidence, but holds {v}; for x, y, z save [T, K, 4] with conf 1, or an .npz with `keypoints` and `conf`",
                path.display()
            ));
        }
    }
    let mut track = Track::new(lay, if dims == 2 { 3 } else { 4 }, dims == 2);
    track.array_frames = Some(t as u64);
    let blank = |v: &f32| v.is_nan() || *v == 0.0;
    for f in 0..t {
        let row = &kp.data[f * k * c..(f + 1) * k * c];
        let crow = conf.map(|cf| &cf.data[f * k..(f + 1) * k]);
        if row.iter().all(blank) && crow.into_iter().flatten().all(blank) {
            continue; // no detection: masked
        }
        let mut vals = [0f32; 4];
        for j in 0..k {
            let joint = &row[j * c..(j + 1) * c];
            let coords = &joint[..dims];
            let score = match (crow, has_conf_channel) {
                (Some(r), _) => r[j],
                (None, true) => joint[c - 1],
                (None, false) if coords.iter().all(|v| *v == 0.0) => 0.0,
                (None, false) => 1.0,
            };
            vals[..dims].copy_from_slice(coords);
            vals[dims] = score;
            track.set(f as u64, j, &vals[..=dims]);
        }
    }
    Ok(track)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_order_is_reordered() {
        // C-order [[0, 1, 2], [3, 4, 5]] stored column-major.
        let f = [0.0, 3.0, 1.0, 4.0, 2.0, 5.0];
        assert_eq!(
            fortran_to_c(&f, &[2, 3]),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
    }
}
