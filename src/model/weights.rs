//! Parameter storage: one backend buffer per diffusers parameter, in state-dict order, and the
//! lookup from names to indices that the model's structure is built from.

use super::UNetConfig;
use super::params::{ParamKind, ParamSpec, parameter_specs};
use crate::backend::Backend;
use crate::layout::{ohwi_to_oihw, oihw_to_ohwi};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;

/// A weight and bias pair by parameter index (convolutions, linears, GroupNorm gamma/beta).
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    pub w: usize,
    pub b: usize,
}

/// The model's parameter list with a name index.
#[derive(Clone, Debug)]
pub struct ParamTable {
    pub specs: Vec<ParamSpec>,
    index: HashMap<String, usize>,
}

impl ParamTable {
    pub fn new(config: &UNetConfig) -> Self {
        let specs = parameter_specs(config);
        let index = specs.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
        ParamTable { specs, index }
    }
    pub fn index(&self, name: &str) -> Result<usize> {
        self.index.get(name).copied().with_context(|| format!("the model has no parameter {name}"))
    }
    /// `{prefix}.weight` and `{prefix}.bias`.
    pub fn pair(&self, prefix: &str) -> Pair {
        let get = |s: &str| self.index[&format!("{prefix}.{s}")];
        Pair { w: get("weight"), b: get("bias") }
    }
    pub fn len(&self) -> usize {
        self.specs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
    pub fn numel(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }
}

/// Host-side parameters in the engine's layouts (convolution weights OHWI).
#[derive(Clone, Debug, PartialEq)]
pub struct HostParams {
    pub values: Vec<Vec<f32>>,
}

impl HostParams {
    /// From tensors in PyTorch layouts, by name (e.g. read from a safetensors file).
    pub fn from_torch(table: &ParamTable, mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)>) -> Result<Self> {
        let mut values = Vec::with_capacity(table.len());
        for spec in &table.specs {
            let (shape, data) =
                tensors.remove(&spec.name).with_context(|| format!("missing parameter {}", spec.name))?;
            if shape != spec.shape {
                bail!("parameter {} has shape {:?}, the config needs {:?}", spec.name, shape, spec.shape);
            }
            values.push(match spec.kind {
                ParamKind::ConvWeight => oihw_to_ohwi(&data, shape[0], shape[1], shape[2], shape[3]),
                _ => data,
            });
        }
        if let Some(extra) = tensors.keys().next() {
            bail!("unexpected parameter {extra} for this config");
        }
        Ok(HostParams { values })
    }

    /// Tensors in PyTorch layouts, in state-dict order.
    pub fn to_torch(&self, table: &ParamTable) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        table
            .specs
            .iter()
            .zip(&self.values)
            .map(|(spec, v)| {
                let data = match spec.kind {
                    ParamKind::ConvWeight => {
                        ohwi_to_oihw(v, spec.shape[0], spec.shape[1], spec.shape[2], spec.shape[3])
                    }
                    _ => v.clone(),
                };
                (spec.name.clone(), spec.shape.clone(), data)
            })
            .collect()
    }

    pub fn upload<B: Backend>(&self, b: &B) -> Result<Vec<B::Buf>> {
        self.values.iter().map(|v| b.upload(v)).collect()
    }

    pub fn download<B: Backend>(b: &B, bufs: &[B::Buf]) -> Result<Self> {
        Ok(HostParams { values: bufs.iter().map(|x| b.download(x)).collect::<Result<_>>()? })
    }
}

impl HostParams {
    /// PyTorch's default initialisation, which diffusers keeps: convolution and linear weights and
    /// biases uniform in +-1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5)), GroupNorm gamma 1 and
    /// beta 0. Drawn from a Philox stream per parameter, so it is the same on every machine.
    pub fn init(table: &ParamTable, seed: u64) -> Self {
        let mut values = Vec::with_capacity(table.len());
        let mut fan_in = 1usize;
        for (i, spec) in table.specs.iter().enumerate() {
            let n = spec.numel();
            let v = match spec.kind {
                ParamKind::NormWeight => vec![1.0; n],
                ParamKind::Bias if spec.name.contains("norm") => vec![0.0; n],
                kind => {
                    if kind != ParamKind::Bias {
                        fan_in = spec.shape[1..].iter().product();
                    }
                    // A bias follows its weight in the table, so fan_in is the weight's.
                    let bound = 1.0 / (fan_in as f32).sqrt();
                    (0..n as u64)
                        .map(|k| (2.0 * crate::math::philox::uniform(seed, i as u64, k) - 1.0) * bound)
                        .collect()
                }
            };
            values.push(v);
        }
        HostParams { values }
    }
}
