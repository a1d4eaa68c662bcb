//! Each GPU kernel of the d2l network alone, batch 256, on the adapter `--device gpu`
//! would take: milliseconds per call (the mean of 5 after one warm-up), to see which
//! kernel a training step's time goes to. `cargo run --release --example gpu_kernel_time`

use std::time::Instant;

use lenet::internal::engine::gpu::device::Gpu;
use lenet::internal::engine::gpu::kernels::{GpuBuf, Kernels, Slice};
use lenet::internal::layers::conv::ConvGeom;
use lenet::internal::layers::pool::{PoolGeom, PoolKind};
use lenet::spec::Activation;

fn s(x: &GpuBuf) -> Slice<'_> {
    x.all()
}

fn main() -> anyhow::Result<()> {
    let k = Kernels::new(Gpu::open(true)?)?;
    println!("{}", k.gpu().adapter.describe());
    let b = 256;
    let time = |name: &str, f: &dyn Fn()| {
        f();
        k.finish();
        let t = Instant::now();
        for _ in 0..5 {
            f();
        }
        k.finish();
        println!("  {name:<28} {:>9.3} ms", t.elapsed().as_secs_f64() * 1e3 / 5.0);
    };
    let buf = |n: usize| k.upload(&(0..n).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect::<Vec<_>>());
    for g in [
        ConvGeom { c: 1, h: 28, w: 28, o: 6, k: 5, pad: 2, stride: 1 },
        ConvGeom { c: 6, h: 14, w: 14, o: 16, k: 5, pad: 0, stride: 1 },
    ] {
        let (x, w, bias, out) = (buf(b * g.in_len()), buf(g.weight_len()), buf(g.o), buf(b * g.out_len()));
        let (dx, dw, db) = (buf(b * g.in_len()), buf(g.weight_len()), buf(g.o));
        time(&format!("conv {}->{} forward", g.c, g.o), &|| k.conv_forward(&g, b, s(&x), s(&w), s(&bias), s(&out)));
        time(&format!("conv {}->{} backward", g.c, g.o), &|| {
            k.conv_backward(&g, b, s(&x), s(&w), s(&out), s(&dw), s(&db), Some(s(&dx)))
        });
    }
    let g = PoolGeom { kind: PoolKind::Avg, h: 28, w: 28, size: 2, stride: 2 };
    let (x, out, dx) = (buf(b * 6 * 784), buf(b * 6 * 196), buf(b * 6 * 784));
    time("avg pool 6x28x28 forward", &|| k.pool_forward(&g, b * 6, x.all(), out.all()));
    time("avg pool 6x28x28 backward", &|| k.pool_backward(&g, b * 6, x.all(), out.all(), dx.all()));
    time("sigmoid 6x28x28 forward", &|| k.activation_forward(Activation::Sigmoid, b * 4704, x.all(), dx.all()));
    for (kk, n) in [(400, 120), (120, 84), (84, 10)] {
        let (x, w, bias, out, dx, dw, db) =
            (buf(b * kk), buf(n * kk), buf(n), buf(b * n), buf(b * kk), buf(n * kk), buf(n));
        time(&format!("linear {kk}->{n} forward"), &|| {
            k.linear_forward(b, kk, n, x.all(), w.all(), bias.all(), out.all())
        });
        time(&format!("linear {kk}->{n} backward"), &|| {
            k.linear_backward(b, kk, n, x.all(), w.all(), out.all(), dw.all(), db.all(), dx.all())
        });
    }
    Ok(())
}
