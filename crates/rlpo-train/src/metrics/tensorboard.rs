//! A small TensorBoard event-file writer: scalars, histograms and text, in the TFRecord framing
//! (`u64 length`, masked CRC32C of the length, the serialized `Event` protobuf, masked CRC32C of
//! the data). Written by hand instead of with tensorboard-rs 0.5, whose `add_text` is
//! `unimplemented!()` (a panic) and whose writes cannot report I/O errors.
//!
//! Protobuf fields used (tensorflow/core/util/event.proto, summary.proto):
//! Event{1 wall_time: double, 2 step: int64, 3 file_version: string, 5 summary: Summary};
//! Summary{1 value: repeated Value}; Value{1 tag, 2 simple_value: float, 5 histo, 8 tensor,
//! 9 metadata}; HistogramProto{1 min, 2 max, 3 num, 4 sum, 5 sum_squares, 6 bucket_limit (packed),
//! 7 bucket (packed)}; TensorProto{1 dtype, 2 tensor_shape, 8 string_val};
//! SummaryMetadata{1 plugin_data: {1 plugin_name}}.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Appends events to `events.out.tfevents.<time>.rlpo` in a log directory.
#[derive(Debug)]
pub struct EventWriter {
    out: BufWriter<File>,
    /// The event file.
    pub path: PathBuf,
}

fn crc32c(data: &[u8]) -> u32 {
    // Bitwise CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): event files are small.
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(field: u32, wire: u32, out: &mut Vec<u8>) {
    varint(((field << 3) | wire) as u64, out);
}

fn bytes_field(field: u32, data: &[u8], out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn double_field(field: u32, v: f64, out: &mut Vec<u8>) {
    key(field, 1, out);
    out.extend_from_slice(&v.to_le_bytes());
}

fn packed_doubles(field: u32, vs: &[f64], out: &mut Vec<u8>) {
    let mut buf = Vec::with_capacity(vs.len() * 8);
    for v in vs {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    bytes_field(field, &buf, out);
}

/// Histogram of `values` in TensorBoard's proto form, with `bins` equal-width buckets.
fn histogram_proto(values: &[f64], bins: usize) -> Vec<u8> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let mut out = Vec::new();
    if finite.is_empty() {
        return out;
    }
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let bins = bins.max(1);
    let width = if max > min { (max - min) / bins as f64 } else { 1.0 };
    let mut counts = vec![0f64; bins];
    for v in &finite {
        let i = (((v - min) / width) as usize).min(bins - 1);
        counts[i] += 1.0;
    }
    let limits: Vec<f64> = (1..=bins).map(|i| if i == bins { max } else { min + width * i as f64 }).collect();
    double_field(1, min, &mut out);
    double_field(2, max, &mut out);
    double_field(3, finite.len() as f64, &mut out);
    double_field(4, finite.iter().sum(), &mut out);
    double_field(5, finite.iter().map(|v| v * v).sum(), &mut out);
    packed_doubles(6, &limits, &mut out);
    packed_doubles(7, &counts, &mut out);
    out
}

impl EventWriter {
    /// Create the event file in `dir` (created if needed) and write the version record.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let path = dir.join(format!("events.out.tfevents.{secs}.rlpo"));
        let mut w = EventWriter { out: BufWriter::new(File::create(&path)?), path };
        let mut ev = Vec::new();
        double_field(1, wall_time(), &mut ev);
        bytes_field(3, b"brain.Event:2", &mut ev);
        w.record(&ev)?;
        Ok(w)
    }

    fn record(&mut self, data: &[u8]) -> std::io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc(&len).to_le_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&masked_crc(data).to_le_bytes())
    }

    fn event(&mut self, step: i64, value: Vec<u8>) -> std::io::Result<()> {
        let mut summary = Vec::new();
        bytes_field(1, &value, &mut summary);
        let mut ev = Vec::new();
        double_field(1, wall_time(), &mut ev);
        key(2, 0, &mut ev);
        varint(step as u64, &mut ev);
        bytes_field(5, &summary, &mut ev);
        self.record(&ev)
    }

    /// A scalar `tag` at `step`.
    pub fn scalar(&mut self, tag: &str, value: f64, step: i64) -> std::io::Result<()> {
        let mut v = Vec::new();
        bytes_field(1, tag.as_bytes(), &mut v);
        key(2, 5, &mut v);
        v.extend_from_slice(&(value as f32).to_le_bytes());
        self.event(step, v)
    }

    /// A histogram of `values` (non-finite values are left out).
    pub fn histogram(&mut self, tag: &str, values: &[f64], step: i64) -> std::io::Result<()> {
        let h = histogram_proto(values, 30);
        if h.is_empty() {
            return Ok(());
        }
        let mut v = Vec::new();
        bytes_field(1, tag.as_bytes(), &mut v);
        bytes_field(5, &h, &mut v);
        self.event(step, v)
    }

    /// A text summary (rendered as Markdown by TensorBoard's text plugin).
    pub fn text(&mut self, tag: &str, text: &str, step: i64) -> std::io::Result<()> {
        let mut tensor = Vec::new();
        key(1, 0, &mut tensor);
        varint(7, &mut tensor); // DT_STRING
        bytes_field(2, &[], &mut tensor); // scalar shape
        bytes_field(8, text.as_bytes(), &mut tensor);
        let mut plugin = Vec::new();
        bytes_field(1, b"text", &mut plugin);
        let mut meta = Vec::new();
        bytes_field(1, &plugin, &mut meta);
        let mut v = Vec::new();
        bytes_field(1, tag.as_bytes(), &mut v);
        bytes_field(8, &tensor, &mut v);
        bytes_field(9, &meta, &mut v);
        self.event(step, v)
    }

    /// Flush buffered events to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vectors() {
        // RFC 3720 test vectors for CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }
}
