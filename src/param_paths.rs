//! A module's float parameters by their dotted module path (`encoder.attention.qkv.weight`), the
//! names checkpoints use. burn's visitors and mappers only see one module name at a time; this
//! keeps the path once for every pass that needs it (saving, loading, initialising, EMA).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

/// Reads each float parameter with its path.
pub trait PathVisitor {
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>);
}

/// Replaces each float parameter, knowing its path.
pub trait PathMapper {
    fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>>;
}

struct Tracked<T> {
    path: Vec<String>,
    inner: T,
}

impl<T: PathVisitor> ModuleVisitor for Tracked<T> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.inner.visit(&self.path.join("."), param);
    }
}

impl<T: PathMapper> ModuleMapper for Tracked<T> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.inner.map(&self.path.join("."), param)
    }
}

/// Runs `visitor` over every float parameter of `module` and gives it back.
pub fn visit<M: Module, V: PathVisitor>(module: &M, visitor: V) -> V {
    let mut tracked = Tracked { path: Vec::new(), inner: visitor };
    module.visit(&mut tracked);
    tracked.inner
}

/// Runs `mapper` over every float parameter of `module`; the new module and the mapper.
pub fn map<M: Module, P: PathMapper>(module: M, mapper: P) -> (M, P) {
    let mut tracked = Tracked { path: Vec::new(), inner: mapper };
    let module = module.map(&mut tracked);
    (module, tracked.inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[derive(Module, Debug)]
    struct Pair {
        first: Linear,
        second: Linear,
    }

    struct Paths(Vec<String>);

    impl PathVisitor for Paths {
        fn visit<const D: usize>(&mut self, path: &str, _param: &Param<Tensor<D>>) {
            self.0.push(path.to_string());
        }
    }

    struct ZeroSecond;

    impl PathMapper for ZeroSecond {
        fn map<const D: usize>(&mut self, path: &str, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if path.starts_with("second.") { p.map(|t| t.zeros_like()) } else { p }
        }
    }

    #[test]
    fn paths_name_nested_parameters_and_mappers_see_them() {
        let device = crate::backend::cpu().device;
        let pair = Pair {
            first: LinearConfig::new(2, 3).init(&device),
            second: LinearConfig::new(3, 1).init(&device),
        };
        let paths = visit(&pair, Paths(Vec::new())).0;
        assert_eq!(paths, ["first.weight", "first.bias", "second.weight", "second.bias"]);
        let (pair, _) = map(pair, ZeroSecond);
        let sum = |t: Tensor<2>| t.abs().sum().into_scalar::<f32>();
        assert_eq!(sum(pair.second.weight.val()), 0.0);
        assert!(sum(pair.first.weight.val()) > 0.0);
    }
}
