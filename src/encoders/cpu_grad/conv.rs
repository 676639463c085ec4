//! A 3 x 3 convolution (stride 1, padding 1) as one graph node: `cpu_fast::conv`'s banded
//! products forward, and backward the weight's gradient from the re-unfolded input, the input's
//! as the same convolution of the output gradient with the flipped, transposed weight, and the
//! bias's as a sum. It keeps only the input and the weight for the backward pass.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use super::{Ad, AdTensor, flex, record, tracked};
use crate::encoders::cpu_fast::{
    ConvShape, contiguous, conv_shape, conv3x3_bias_grad, conv3x3_values, conv3x3_weight_grad,
    flipped_transposed, values,
};

/// `conv.forward(x)` for a 3 x 3 convolution under autodiff on the CPU; `None` elsewhere.
pub fn conv3x3(conv: &Conv2d, x: Tensor<4>) -> Option<Tensor<4>> {
    let s = conv_shape(conv, x.dims())?;
    let (x, weight) = (tracked(&x)?, tracked(&conv.weight.val())?);
    let out = match conv.bias.as_ref() {
        Some(bias) => run([x, weight, tracked(&bias.val())?], s),
        None => run([x, weight], s),
    };
    Some(Tensor::from_primitive::<Ad>(out))
}

fn run<const N: usize>(inputs: [AdTensor; N], s: ConvShape) -> AdTensor {
    let x = contiguous(inputs[0].primitive().clone());
    let weight = contiguous(inputs[1].primitive().clone());
    let bias = inputs.get(2).map(|b| contiguous(b.primitive().clone()));
    let out = conv3x3_values(values(&x), values(&weight), bias.as_ref().map(values), s);
    let out = flex(out, [s.batch, s.outputs, s.h, s.w]);
    record(Conv3x3Backward(s), inputs.each_ref(), || (x, weight), out)
}

#[derive(Debug)]
struct Conv3x3Backward(ConvShape);

impl<const N: usize> Backward<Flex, N> for Conv3x3Backward {
    /// The input and the weight, contiguous.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = self.0;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let dy = values(&dy);
        let (x, weight) = ops.state;
        let mut parents = ops.parents.into_iter();
        if let Some(Some(input)) = parents.next() {
            let turned = flipped_transposed(values(&weight), s);
            let dx = conv3x3_values(dy, &turned, None, s.transposed());
            grads.register::<Flex>(input.id, flex(dx, [s.batch, s.inputs, s.h, s.w]));
        }
        if let Some(Some(weight)) = parents.next() {
            let dw = conv3x3_weight_grad(values(&x), dy, s);
            grads.register::<Flex>(weight.id, flex(dw, [s.outputs, s.inputs, 3, 3]));
        }
        if let Some(Some(bias)) = parents.next() {
            grads.register::<Flex>(bias.id, flex(conv3x3_bias_grad(dy, s), [s.outputs]));
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;

    use super::super::tests::{max_difference, ramp};
    use super::*;

    /// The output and the input's, weight's and bias's gradients against burn's convolution
    /// under autodiff, for several bands with a short last one and a width of one.
    #[test]
    fn conv3x3_and_its_gradients_match_burn() {
        let device = Device::flex().autodiff();
        for (b, c, o, h, w) in [(2, 3, 5, 19, 9), (3, 2, 4, 5, 1)] {
            let conv = Conv2dConfig::new([c, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&device);
            let x = ramp([b, c, h, w], 1, 4.0).require_grad();
            let outputs = |y: Tensor<4>| {
                let loss = (y.clone() * ramp(y.dims(), 3, 2.0)).sum();
                let grads = loss.backward();
                let weight = conv.weight.val().grad(&grads).expect("weight gradient");
                let bias = conv.bias.as_ref().unwrap().val().grad(&grads).expect("bias gradient");
                let input = x.grad(&grads).expect("input gradient");
                (y, Tensor::from_inner(input), Tensor::from_inner(weight), Tensor::from_inner(bias))
            };
            let (y, dx, dw, db) = outputs(conv3x3(&conv, x.clone()).expect("the fused path"));
            let (y0, dx0, dw0, db0) = outputs(conv.forward(x.clone()));
            let diffs = [
                max_difference(y, y0),
                max_difference(dx, dx0),
                max_difference(dw, dw0),
                max_difference(db, db0),
            ];
            assert!(diffs.iter().all(|&d| d < 1e-4), "{b}x{c}x{h}x{w} -> {o}: {diffs:?}");
        }
    }
}
