//! The tract implementation of [`Embedder`]: load, optimize and run an ONNX model.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use image::RgbImage;
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::floats::FloatPrecisionTranslator;
use tract_onnx::tract_core::transform::ModelTransform;

use super::{BackboneId, EmbedError, Embedder, Embedding, Preprocess};
use crate::config::{BackboneConfig, Precision};

type Plan = TypedSimplePlan;
type State = TypedSimpleState;

/// An optimized tract plan and the state it runs in.
///
/// With [`Precision::F16`] the decluttered model goes through tract's
/// `FloatPrecisionTranslator` (f32 → f16) with a node filter that keeps the depthwise
/// convolutions (`Conv` with `group > 1`) and their weights in f32 (their inputs are
/// cast back from f16): tract's f16 depthwise kernel is scalar, and the depthwise
/// layers are the ones precision loss hurts most (they stay float in `int8w` too).
/// The input is cast to the plan's input type and the features back to f32.
///
/// The state (tract's per-run buffers) is kept between runs, so a frame costs no
/// plan set-up; its mutex is also the one backbone permit that inference and learning
/// share.
pub struct TractEmbedder {
    id: BackboneId,
    dim: usize,
    preprocess: Preprocess,
    shape: [usize; 4],
    state: Mutex<State>,
    /// How long loading and optimizing took, for `bench` and the start-up log.
    pub load_time: Duration,
    /// Threads of tract's matrix products (`backbone.threads`, resolved).
    pub threads: usize,
    /// `F32` or `F16`: `backbone.precision` resolved for this CPU.
    pub precision: Precision,
    /// The plan's input type (f16 when the translator turned the input into f16).
    input_type: DatumType,
}

fn load_err(path: &Path, e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Load {
        path: path.display().to_string(),
        message: format!("{e:#}"),
    }
}

impl TractEmbedder {
    /// Load, optimize and plan the model described by `config`. Slow (seconds): call
    /// it once at start-up.
    pub fn load(config: &BackboneConfig) -> Result<Self, EmbedError> {
        Self::load_batch(config, 1)
    }

    /// [`TractEmbedder::load`] with `batch` images per run (the first input
    /// dimension): [`TractEmbedder::embed_tensor`] then takes `batch` inputs one
    /// after the other and returns their features concatenated. Used by `bench
    /// --batch` to measure whether batching crops pays.
    pub fn load_batch(config: &BackboneConfig, batch: usize) -> Result<Self, EmbedError> {
        let started = Instant::now();
        let path = config.model.as_path();
        let bytes = std::fs::read(path).map_err(|source| EmbedError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let preprocess = Preprocess::from_config(config);
        let mut shape = preprocess.shape();
        shape[0] = batch.max(1);
        let precision = config.precision.resolve();
        let typed = typed_model(config, &bytes, shape, precision).map_err(|e| load_err(path, e))?;
        let dim = output_dim(&typed).map_err(|e| load_err(path, e))?;
        let input_type = typed
            .input_fact(0)
            .map_err(|e| load_err(path, e))?
            .datum_type;
        let threads = config.threads.resolve();
        let options = RunOptions {
            executor: (threads > 1).then(|| {
                tract_linalg::multithread::Executor::multithread_with_name(threads, "backbone")
            }),
            ..Default::default()
        };
        let plan: std::sync::Arc<Plan> = typed
            .into_runnable_with_options(&options)
            .map_err(|e| load_err(path, e))?;
        let state = State::new(&plan).map_err(|e| load_err(path, e))?;
        // f32 ids stay those of the versions before `precision`.
        let f16 = if precision == Precision::F16 {
            "\nprecision=f16"
        } else {
            ""
        };
        let settings = format!(
            "{}\noutput={}\ntransforms={:?}{f16}",
            preprocess.identity(),
            config.output,
            config.transforms,
        );
        Ok(Self {
            id: BackboneId::new(name, sha256, &settings),
            dim,
            preprocess,
            shape,
            state: Mutex::new(state),
            load_time: started.elapsed(),
            threads,
            precision,
            input_type,
        })
    }

    /// Run the backbone on an already preprocessed input tensor (`shape()` order).
    pub fn embed_tensor(&self, input: Vec<f32>) -> Result<Vec<f32>, EmbedError> {
        let want: usize = self.shape.iter().product();
        if input.len() != want {
            return Err(EmbedError::InputSize {
                got: input.len(),
                want,
            });
        }
        let tensor = self.input_tensor(input)?;
        // A poisoned lock only means another run panicked; the state is reset by `run`.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = state
            .run(tvec!(tensor.into_tvalue()))
            .map_err(|e| EmbedError::Run(format!("{e:#}")))?;
        let out = outputs
            .first()
            .ok_or_else(|| EmbedError::Run("the model returned no output".into()))?;
        let out = out
            .cast_to::<f32>()
            .map_err(|e| EmbedError::Run(format!("{e:#}")))?;
        let view = out
            .to_plain_array_view::<f32>()
            .map_err(|e| EmbedError::Run(format!("{e:#}")))?;
        Ok(view.iter().copied().collect())
    }

    /// `input` (f32, `shape()` order) as a tensor of the plan's input type.
    fn input_tensor(&self, input: Vec<f32>) -> Result<Tensor, EmbedError> {
        let tensor = tract_ndarray::Array4::from_shape_vec(self.shape, input)
            .map_err(|e| EmbedError::Run(e.to_string()))?
            .into_tensor();
        if self.input_type == f32::datum_type() {
            return Ok(tensor);
        }
        tensor
            .cast_to_dt(self.input_type)
            .map(|t| t.into_owned())
            .map_err(|e| EmbedError::Run(format!("{e:#}")))
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Time every node of the optimized plan over `runs` runs on `input`; per
    /// operator kind: (name, node count, total ms per run), most expensive first.
    pub fn profile(
        &self,
        input: &[f32],
        runs: usize,
    ) -> Result<Vec<(String, usize, f64)>, EmbedError> {
        use std::collections::HashMap;
        let mut per_op: HashMap<String, (std::collections::HashSet<usize>, Duration)> =
            HashMap::new();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..runs.max(1) {
            let tensor = self.input_tensor(input.to_vec())?;
            state
                .run_plan_with_eval(
                    tvec!(tensor.into_tvalue()),
                    |ctx, op_state, node, inputs| {
                        let t = Instant::now();
                        let r = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                        let e = per_op.entry(node.op().name().to_string()).or_default();
                        e.0.insert(node.id);
                        e.1 += t.elapsed();
                        r
                    },
                )
                .map_err(|e| EmbedError::Run(format!("{e:#}")))?;
        }
        let mut rows: Vec<(String, usize, f64)> = per_op
            .into_iter()
            .map(|(k, (nodes, d))| {
                (
                    k,
                    nodes.len(),
                    d.as_secs_f64() * 1000.0 / runs.max(1) as f64,
                )
            })
            .collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(rows)
    }
}

impl Embedder for TractEmbedder {
    fn id(&self) -> &BackboneId {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, image: &RgbImage) -> Result<Embedding, EmbedError> {
        let t0 = Instant::now();
        let input = self.preprocess.run(image);
        let t1 = Instant::now();
        let features = self.embed_tensor(input)?;
        Ok(Embedding {
            features,
            preprocess: t1 - t0,
            inference: t1.elapsed(),
        })
    }
}

/// The outlet named by `output`: an output's name, any tensor's name, or an index.
/// The ONNX model in `bytes` with its one input of `shape`, cut at the output
/// `config.output`, typed, decluttered, translated to `precision` (the depthwise
/// convolutions stay f32), transformed and optimized.
fn typed_model(
    config: &BackboneConfig,
    bytes: &[u8],
    shape: [usize; 4],
    precision: Precision,
) -> TractResult<TypedModel> {
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_read(&mut &bytes[..])?;
    if model.inputs.len() != 1 {
        anyhow::bail!(
            "the model has {} inputs, edgehead feeds one image",
            model.inputs.len()
        );
    }
    model.set_input_fact(0, f32::fact(shape).into())?;
    let outlet = select_output(&model, &config.output)?;
    model.select_output_outlets(&[outlet])?;
    let mut typed = model.into_typed()?.into_decluttered()?;
    if precision == Precision::F16 {
        let keep = kept_in_f32(&typed);
        FloatPrecisionTranslator::with_filter(f32::datum_type(), f16::datum_type(), move |node| {
            !keep.contains(&node.id)
        })
        .transform(&mut typed)
        .map_err(|e| anyhow::anyhow!("f16 translation: {e:#}"))?;
    }
    for name in &config.transforms {
        let transform = tract_onnx::tract_core::transform::get_transform(name)?
            .ok_or_else(|| anyhow::anyhow!("tract has no model transform {name:?}"))?;
        transform
            .transform(&mut typed)
            .map_err(|e| anyhow::anyhow!("transform {name}: {e:#}"))?;
    }
    typed.into_optimized()
}

/// The number of features of the model's output: a fixed shape of floats.
fn output_dim(typed: &TypedModel) -> TractResult<usize> {
    let out_fact = typed.output_fact(0)?;
    let dim = out_fact
        .shape
        .as_concrete()
        .map(|s| s.iter().product::<usize>())
        .ok_or_else(|| anyhow::anyhow!("output shape {:?} is not fixed", out_fact.shape))?;
    if !out_fact.datum_type.is_float() {
        anyhow::bail!(
            "output is {:?}, edgehead needs float features",
            out_fact.datum_type
        );
    }
    Ok(dim)
}

fn select_output(model: &InferenceModel, output: &str) -> TractResult<OutletId> {
    let outputs = model.output_outlets()?;
    if let Ok(ix) = output.parse::<usize>() {
        return outputs.get(ix).copied().ok_or_else(|| {
            anyhow::anyhow!(
                "output index {ix} is out of range: the model has {} outputs",
                outputs.len()
            )
        });
    }
    if let Some(o) = outputs
        .iter()
        .find(|o| model.outlet_label(**o) == Some(output) || model.node(o.node).name == output)
    {
        return Ok(*o);
    }
    if let Some(o) = model.find_outlet_label(output) {
        return Ok(o);
    }
    if let Ok(node) = model.node_id_by_name(output) {
        return Ok(OutletId::new(node, 0));
    }
    let names: Vec<String> = outputs
        .iter()
        .map(|o| {
            model
                .outlet_label(*o)
                .unwrap_or(&model.node(o.node).name)
                .to_string()
        })
        .collect();
    anyhow::bail!("no output named {output:?}; the model's outputs are {names:?}")
}

/// The nodes that stay f32 under `precision = "f16"`: the depthwise (grouped)
/// convolutions, and the constants (kernels, biases) that only they read, so their
/// weights are not rounded to f16 on the way.
fn kept_in_f32(model: &TypedModel) -> std::collections::HashSet<usize> {
    let depthwise: std::collections::HashSet<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<tract_onnx::tract_core::ops::cnn::Conv>()
                .is_some_and(|c| c.group > 1)
        })
        .map(|n| n.id)
        .collect();
    let mut keep = depthwise.clone();
    for n in model.nodes() {
        let successors: Vec<usize> = n
            .outputs
            .iter()
            .flat_map(|o| o.successors.iter().map(|s| s.node))
            .collect();
        if n.op_is::<tract_onnx::tract_core::ops::konst::Const>()
            && !successors.is_empty()
            && successors.iter().all(|s| depthwise.contains(s))
        {
            keep.insert(n.id);
        }
    }
    keep
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
