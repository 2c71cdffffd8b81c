//! `gptoss inspect FILE`: print a GGUF file's (or split set's) header: version, alignment,
//! metadata (long arrays summarized), tensors, per-type totals and the parameter count; or the
//! same as one JSON object with `--json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use gguf_format::{Array, GgmlType, GgufModel, Value};
use serde_json::{json, Value as Json};

/// Arrays longer than this are shown as `[type; len]` / `{"type", "len"}`.
pub const MAX_LISTED_ITEMS: usize = 64;

/// Arguments of `gptoss inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// GGUF file; for a split set (`name-00001-of-00003.gguf`) any shard opens the whole set.
    pub file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `gptoss inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let model = GgufModel::open(&args.file)
        .with_context(|| format!("inspecting {}", args.file.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary_json(&model))?;
        writeln!(out)?;
    } else {
        write_human(&model, &args.file, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

fn float_json(x: f64) -> Json {
    if x.is_finite() {
        json!(x)
    } else {
        // JSON has no NaN/inf: spell them as strings.
        json!(x.to_string())
    }
}

fn array_json(a: &Array) -> Json {
    if a.len() > MAX_LISTED_ITEMS {
        return json!({"type": a.elem_type().name(), "len": a.len()});
    }
    match a {
        Array::Array(items) => Json::Array(items.iter().map(array_json).collect()),
        _ => Json::Array(
            (0..a.len())
                .filter_map(|i| a.get(i))
                .map(|v| value_json(&v))
                .collect(),
        ),
    }
}

/// A metadata value as JSON (arrays over [`MAX_LISTED_ITEMS`] as `{"type", "len"}`).
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::F32(x) => float_json(f64::from(*x)),
        Value::F64(x) => float_json(*x),
        Value::Bool(b) => json!(b),
        Value::String(s) => json!(s),
        Value::Array(a) => array_json(a),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        other => json!(other.as_integer().and_then(|i| i64::try_from(i).ok())),
    }
}

/// The `--json` object: `{"version", "alignment", "metadata": {key: value}, "tensors": [{"name",
/// "type", "type_id", "dims" (GGUF order), "offset" (from the data section of its shard),
/// "size" (bytes, null for unknown types)}]}`; split sets add `"shard"` (0-based) per tensor.
pub fn summary_json(model: &GgufModel) -> Json {
    let metadata: serde_json::Map<String, Json> = model
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_string(), value_json(v)))
        .collect();
    let split = model.shards().len() > 1;
    let tensors: Vec<Json> = model
        .shards()
        .iter()
        .enumerate()
        .flat_map(|(s, file)| file.tensors().iter().map(move |t| (s, t)))
        .map(|(s, t)| {
            let mut o = json!({
                "name": t.name,
                "type": t.ty.to_string(),
                "type_id": t.ty.id(),
                "dims": t.dims,
                "offset": t.offset,
                "size": t.n_bytes(),
            });
            if split {
                o["shard"] = json!(s);
            }
            o
        })
        .collect();
    json!({
        "version": model.version(),
        "alignment": model.alignment(),
        "metadata": metadata,
        "tensors": tensors,
    })
}

/// Short text for a metadata value: strings quoted and cut at 100 chars, long arrays as
/// `[string; 201088]`.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let n = s.chars().count();
            if n > 100 {
                let head: String = s.chars().take(100).collect();
                format!("{head:?}... ({n} chars)")
            } else {
                format!("{s:?}")
            }
        }
        Value::Array(a) => array_text(a),
        Value::F32(x) => format!("{x:?}"),
        Value::F64(x) => format!("{x:?}"),
        Value::Bool(b) => b.to_string(),
        other => other
            .as_integer()
            .map_or_else(|| format!("{other:?}"), |i| i.to_string()),
    }
}

fn array_text(a: &Array) -> String {
    if a.len() > MAX_LISTED_ITEMS {
        return format!("[{}; {}]", a.elem_type(), a.len());
    }
    let items: Vec<String> = match a {
        Array::Array(v) => v.iter().map(array_text).collect(),
        _ => (0..a.len())
            .filter_map(|i| a.get(i))
            .map(|v| value_text(&v))
            .collect(),
    };
    format!("[{}]", items.join(", "))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if x < 1024.0 {
            break;
        }
        x /= 1024.0;
        unit = u;
    }
    if unit == "B" {
        format!("{n} B")
    } else {
        format!("{x:.2} {unit}")
    }
}

/// Writes the text report.
pub fn write_human(
    model: &GgufModel,
    path: &std::path::Path,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(out, "file: {}", path.display())?;
    writeln!(
        out,
        "GGUF v{}, alignment {}, {} shard(s), {} ({} bytes)",
        model.version(),
        model.alignment(),
        model.shards().len(),
        human_bytes(model.file_size()),
        model.file_size()
    )?;
    let meta = model.metadata();
    writeln!(out, "\nmetadata ({} pairs):", meta.len())?;
    for (k, v) in meta.iter() {
        writeln!(out, "  {k} ({}) = {}", v.value_type(), value_text(v))?;
    }

    writeln!(out, "\ntensors ({}):", model.tensor_count())?;
    let width = model.tensors().map(|t| t.name.len()).max().unwrap_or(4);
    writeln!(
        out,
        "  {:<width$}  {:<8}  {:<24}  {:>14}",
        "name", "type", "dims (ne0 first)", "bytes"
    )?;
    // (tensors, elements, bytes) per type.
    let mut per_type: BTreeMap<u32, (GgmlType, u64, u64, u64)> = BTreeMap::new();
    let mut params = 0u64;
    for t in model.tensors() {
        let dims = format!("{:?}", t.dims);
        let bytes = t.n_bytes().map_or_else(|| "?".into(), |b| b.to_string());
        writeln!(
            out,
            "  {:<width$}  {:<8}  {:<24}  {:>14}",
            t.name,
            t.ty.to_string(),
            dims,
            bytes
        )?;
        let e = per_type.entry(t.ty.id()).or_insert((t.ty, 0, 0, 0));
        e.1 += 1;
        e.2 += t.n_elements();
        e.3 += t.n_bytes().unwrap_or(0);
        params += t.n_elements();
    }
    writeln!(out, "\ntotals per type:")?;
    let mut total_bytes = 0;
    for (ty, count, elems, bytes) in per_type.values() {
        total_bytes += bytes;
        writeln!(
            out,
            "  {:<8} {count:>5} tensors  {elems:>14} elements  {:>12}",
            ty.to_string(),
            human_bytes(*bytes)
        )?;
    }
    writeln!(out, "  tensor data: {}", human_bytes(total_bytes))?;
    writeln!(out, "parameters: {params} ({:.3} B)", params as f64 / 1e9)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf_format::GgufWriter;

    fn gguf_fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gguf-format/tests/fixtures")
    }

    /// The JSON summary agrees with gguf-py's own reading of a gguf-py-written file.
    #[test]
    fn summary_matches_gguf_py_dump() {
        let dir = gguf_fixtures();
        let model = GgufModel::open(dir.join("py_all_types.gguf")).unwrap();
        let s = summary_json(&model);
        let text = std::fs::read_to_string(dir.join("py_all_types.json")).unwrap();
        let dump: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(s["version"], dump["version"]);
        assert_eq!(s["alignment"], dump["alignment"]);
        let tensors = s["tensors"].as_array().unwrap();
        let want = dump["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), want.len());
        for (t, w) in tensors.iter().zip(want) {
            for (ours, theirs) in [
                ("name", "name"),
                ("type", "type"),
                ("type_id", "type_id"),
                ("dims", "dims"),
                ("offset", "offset"),
                ("size", "n_bytes"),
            ] {
                assert_eq!(t[ours], w[theirs], "{ours} of {}", t["name"]);
            }
        }
        let meta = s["metadata"].as_object().unwrap();
        assert_eq!(meta.len(), dump["metadata"].as_array().unwrap().len());
        assert_eq!(meta["t.string"], dump["metadata"][14]["value"]);
        assert_eq!(meta["t.u64"], json!(u64::MAX));
        assert_eq!(meta["t.f32_nan"], json!("NaN"));
        assert_eq!(meta["t.arr_nested_i32"], json!([[1, 2, 3], [4], [-5, 6]]));
    }

    #[test]
    fn long_arrays_are_summarized_and_text_report_has_totals() {
        let dir = std::env::temp_dir().join(format!("gpt-cli-inspect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        let mut w = GgufWriter::new();
        let toks: Vec<String> = (0..65).map(|i| format!("tok{i}")).collect();
        w.add_kv("tokenizer.ggml.tokens", Value::Array(Array::String(toks)))
            .unwrap();
        let short: Vec<i32> = (0..64).collect();
        w.add_kv("short", Value::Array(Array::I32(short))).unwrap();
        w.add_tensor("a", &[32, 2], GgmlType::Q8_0, vec![3; 68])
            .unwrap();
        w.add_tensor("b", &[5], GgmlType::F32, vec![7; 20]).unwrap();
        w.write_file(&path, |_, _, _| Ok(())).unwrap();
        let model = GgufModel::open(&path).unwrap();

        let s = summary_json(&model);
        assert_eq!(
            s["metadata"]["tokenizer.ggml.tokens"],
            json!({"type": "string", "len": 65})
        );
        assert_eq!(s["metadata"]["short"].as_array().unwrap().len(), 64);
        assert_eq!(s["tensors"][1]["offset"], json!(96));

        let mut text = Vec::new();
        write_human(&model, &path, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("tokenizer.ggml.tokens (array) = [string; 65]"),
            "{text}"
        );
        assert!(text.contains("parameters: 69 "), "{text}");
        assert!(
            text.contains("Q8_0         1 tensors              64 elements"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
