//! Times `GgufFile::open` on a file with the header of the published gpt-oss-20b MXFP4 GGUF:
//! the 35 metadata pairs (201,088 token strings, 446,189 merges, 201,088 i32 token types, a
//! chat template) and the 459 real tensor infos (names, dims, Q8_0/MXFP4/F32 types, offsets).
//! The 12 GB data section is a sparse hole (`set_len`), so building the file takes seconds and
//! almost no disk. Run: `cargo bench -p gguf-format --bench open -- --warm-up-time 1 --measurement-time 3`.

use std::fs::File;
use std::hint::black_box;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use criterion::Criterion;
use gguf_format::{Array, GgmlType, GgufFile, GgufWriter, Value};

const N_VOCAB: usize = 201_088;
const N_MERGES: usize = 446_189;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A byte-level BPE-looking token: 1-12 chars, often starting with `Ġ` (2 UTF-8 bytes).
    fn token(&mut self) -> String {
        const CHARS: &[char] = &[
            'a', 'e', 'i', 'n', 'o', 'r', 's', 't', 'l', 'c', 'Ċ', 'ä', '.',
        ];
        let len = 1 + (self.next() % 12) as usize;
        let mut s = String::new();
        if self.next().is_multiple_of(2) {
            s.push('Ġ');
        }
        for _ in 0..len {
            s.push(CHARS[(self.next() % CHARS.len() as u64) as usize]);
        }
        s
    }
}

fn metadata(w: &mut GgufWriter) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let s = |v: &str| Value::String(v.to_string());
    let kvs: Vec<(&str, Value)> = vec![
        ("general.architecture", s("gpt-oss")),
        ("general.type", s("model")),
        ("general.name", s("Gpt Oss 20b")),
        ("general.basename", s("gpt-oss")),
        ("general.size_label", s("20B")),
        ("general.license", s("apache-2.0")),
        (
            "general.tags",
            Value::Array(Array::String(vec!["vllm".into(), "text-generation".into()])),
        ),
        ("gpt-oss.block_count", Value::U32(24)),
        ("gpt-oss.context_length", Value::U32(131_072)),
        ("gpt-oss.embedding_length", Value::U32(2880)),
        ("gpt-oss.feed_forward_length", Value::U32(2880)),
        ("gpt-oss.attention.head_count", Value::U32(64)),
        ("gpt-oss.attention.head_count_kv", Value::U32(8)),
        ("gpt-oss.rope.freq_base", Value::F32(150_000.0)),
        ("gpt-oss.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("gpt-oss.expert_count", Value::U32(32)),
        ("gpt-oss.expert_used_count", Value::U32(4)),
        ("gpt-oss.attention.key_length", Value::U32(64)),
        ("gpt-oss.attention.value_length", Value::U32(64)),
        ("gpt-oss.attention.sliding_window", Value::U32(128)),
        ("gpt-oss.expert_feed_forward_length", Value::U32(2880)),
        ("gpt-oss.rope.scaling.type", s("yarn")),
        ("gpt-oss.rope.scaling.factor", Value::F32(32.0)),
        (
            "gpt-oss.rope.scaling.original_context_length",
            Value::U32(4096),
        ),
        ("general.quantization_version", Value::U32(2)),
        ("general.file_type", Value::U32(38)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("gpt-4o")),
        (
            "tokenizer.ggml.tokens",
            Value::Array(Array::String((0..N_VOCAB).map(|_| rng.token()).collect())),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(
                (0..N_VOCAB)
                    .map(|i| if i >= 199_998 { 3 } else { 1 })
                    .collect(),
            )),
        ),
        (
            "tokenizer.ggml.merges",
            Value::Array(Array::String(
                (0..N_MERGES)
                    .map(|_| format!("{} {}", rng.token(), rng.token()))
                    .collect(),
            )),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(199_998)),
        ("tokenizer.ggml.eos_token_id", Value::U32(200_002)),
        ("tokenizer.ggml.padding_token_id", Value::U32(199_999)),
        (
            "tokenizer.chat_template",
            s(&"{%- if messages -%}<|start|>{{ m.content }}<|end|>".repeat(320)),
        ),
    ];
    assert_eq!(kvs.len(), 35);
    for (k, v) in kvs {
        w.add_kv(k, v).expect("unique key");
    }
}

fn tensors(w: &mut GgufWriter) {
    use GgmlType::{F32, MXFP4, Q8_0};
    let mut add =
        |name: String, dims: &[u64], ty| w.add_tensor_info(name, dims, ty).expect("valid info");
    add("token_embd.weight".into(), &[2880, 201_088], Q8_0);
    add("output_norm.weight".into(), &[2880], F32);
    add("output.weight".into(), &[2880, 201_088], Q8_0);
    for l in 0..24 {
        let layer: [(&str, &[u64], GgmlType); 19] = [
            ("attn_norm.weight", &[2880], F32),
            ("attn_q.weight", &[2880, 4096], Q8_0),
            ("attn_q.bias", &[4096], F32),
            ("attn_k.weight", &[2880, 512], Q8_0),
            ("attn_k.bias", &[512], F32),
            ("attn_v.weight", &[2880, 512], Q8_0),
            ("attn_v.bias", &[512], F32),
            ("attn_output.weight", &[4096, 2880], Q8_0),
            ("attn_output.bias", &[2880], F32),
            ("attn_sinks.weight", &[64], F32),
            ("post_attention_norm.weight", &[2880], F32),
            ("ffn_gate_inp.weight", &[2880, 32], F32),
            ("ffn_gate_inp.bias", &[32], F32),
            ("ffn_gate_exps.weight", &[2880, 2880, 32], MXFP4),
            ("ffn_gate_exps.bias", &[2880, 32], F32),
            ("ffn_up_exps.weight", &[2880, 2880, 32], MXFP4),
            ("ffn_up_exps.bias", &[2880, 32], F32),
            ("ffn_down_exps.weight", &[2880, 2880, 32], MXFP4),
            ("ffn_down_exps.bias", &[2880, 32], F32),
        ];
        for (name, dims, ty) in layer {
            add(format!("blk.{l}.{name}"), dims, ty);
        }
    }
}

/// Writes the header and extends the file (sparsely) to its full size.
fn build(path: &Path) -> u64 {
    let mut w = GgufWriter::new();
    metadata(&mut w);
    tensors(&mut w);
    assert_eq!(w.tensor_count(), 459);
    let file = File::create(path).expect("create bench file");
    let data_offset = w.write_header(BufWriter::new(&file)).expect("write header");
    let total = data_offset + w.data_size().expect("data size");
    file.set_len(total).expect("extend sparse file");
    eprintln!("bench file: header {data_offset} bytes, total {total} bytes (sparse)");
    total
}

fn main() {
    let path: PathBuf =
        std::env::temp_dir().join(format!("gguf-format-bench-{}.gguf", std::process::id()));
    let total = build(&path);
    let f = GgufFile::open(&path).expect("bench file opens");
    assert_eq!(
        (f.tensors().len(), f.metadata().len(), f.file_size()),
        (459, 35, total)
    );
    assert_eq!(
        f.metadata()
            .get_str_array("tokenizer.ggml.merges")
            .map(<[_]>::len)
            .ok(),
        Some(N_MERGES)
    );
    drop(f);

    let mut c = Criterion::default().configure_from_args();
    // Time to open (mmap + parse + check); dropping the parsed file is not timed here.
    c.bench_function(
        "GgufFile::open gpt-oss-20b header (201k vocab, 446k merges, 459 tensors)",
        |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let t = std::time::Instant::now();
                    let f = black_box(GgufFile::open(black_box(&path)).expect("open"));
                    total += t.elapsed();
                    drop(f);
                }
                total
            })
        },
    );
    // The same including the drop of the ~650k metadata strings.
    c.bench_function("GgufFile::open + drop (same file)", |b| {
        b.iter(|| black_box(GgufFile::open(black_box(&path)).expect("open")))
    });
    c.final_summary();
    let _ = std::fs::remove_file(&path);
}
