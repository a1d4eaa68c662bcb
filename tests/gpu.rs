//! The GPU engine on whatever adapter this machine has (in CI: Mesa's lavapipe, a
//! software Vulkan device; `scripts/test` sets LENET_REQUIRE_GPU=1 there, and a missing
//! adapter fails instead of skipping): each kernel against the CPU engine's f32 kernel
//! and the f64 reference on the same random inputs, forward and backward, on every
//! geometry the presets use; reruns bit-identical; `--device` parsing and the clear
//! error when there is no adapter.
#![cfg(feature = "gpu")]

use std::process::Command;

use lenet::internal::engine::gpu::device::{choose, Chosen, DeviceChoice, Gpu};
use lenet::internal::engine::gpu::kernels::Kernels;
use lenet::internal::layers::activation::{activation_backward, activation_forward};
use lenet::internal::layers::conv::{conv2d_backward, conv2d_forward, ConvGeom};
use lenet::internal::layers::linear::{linear_backward, linear_forward};
use lenet::internal::layers::pool::{pool_backward, pool_forward, PoolGeom, PoolKind};
use lenet::internal::layers::rbf::{rbf_backward, rbf_forward};
use lenet::internal::layers::subsample::{subsample_backward, subsample_forward, SubsampleGeom};
use lenet::internal::layers::Par;
use lenet::internal::reference as r;
use lenet::spec::Activation;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The kernels on this machine's GPU (hardware or software), or None (with a note)
/// where there is none and none is required.
fn kernels() -> Option<Kernels> {
    match Gpu::open(true) {
        Ok(gpu) => Some(Kernels::new(gpu).expect("the shaders compile")),
        Err(e) if std::env::var_os("LENET_REQUIRE_GPU").is_some() => {
            panic!("LENET_REQUIRE_GPU is set but no GPU adapter opened: {e}")
        }
        Err(e) => {
            eprintln!("no GPU adapter, GPU tests not run: {e}");
            None
        }
    }
}

fn randn(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// |got − want| ≤ rel · (largest |want|) elementwise: each tensor against its own scale.
fn close(what: &str, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: nothing to compare");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= rel * scale, "{what}[{i}]: {g} vs {w} (scale {scale:.3e})");
    }
}

/// The presets' convolutions (d2l/relu C1 with padding 2 on 28×28, C3 on 14×14; lenet5's
/// C1 on 32×32, C3 and C5) and strides and paddings the presets do not use.
const CONVS: [ConvGeom; 7] = [
    ConvGeom { c: 1, h: 28, w: 28, o: 6, k: 5, pad: 2, stride: 1 },
    ConvGeom { c: 6, h: 14, w: 14, o: 16, k: 5, pad: 0, stride: 1 },
    ConvGeom { c: 1, h: 32, w: 32, o: 6, k: 5, pad: 0, stride: 1 },
    ConvGeom { c: 16, h: 5, w: 5, o: 120, k: 5, pad: 0, stride: 1 },
    ConvGeom { c: 2, h: 12, w: 13, o: 3, k: 5, pad: 1, stride: 2 },
    ConvGeom { c: 3, h: 7, w: 6, o: 4, k: 3, pad: 1, stride: 2 },
    ConvGeom { c: 2, h: 8, w: 10, o: 9, k: 3, pad: 0, stride: 1 },
];

#[test]
fn conv_matches_the_cpu_engine_and_the_reference() {
    let Some(k) = kernels() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for g in CONVS {
        let batch = 5;
        let (x, w, b, dout) = (
            randn(&mut rng, batch * g.in_len()),
            randn(&mut rng, g.weight_len()),
            randn(&mut rng, g.o),
            randn(&mut rng, batch * g.out_len()),
        );
        // The CPU engine's f32 kernel and the f64 reference.
        let mut cpu = vec![0.0f32; batch * g.out_len()];
        conv2d_forward(&mut cpu, &x, &w, &b, &g, batch, Par::SERIAL);
        let (mut cpu_dx, mut cpu_dw, mut cpu_db) = (vec![0.0f32; x.len()], vec![0.5f32; w.len()], vec![0.25f32; g.o]);
        conv2d_backward(Some(&mut cpu_dx), &mut cpu_dw, &mut cpu_db, &dout, &x, &w, &g, batch, Par::SERIAL);
        let mut want = vec![0.0; cpu.len()];
        r::conv::conv_forward(&mut want, &f64s(&x), &f64s(&w), &f64s(&b), &g, batch);
        let (mut want_dx, mut want_dw, mut want_db) = (vec![0.0; x.len()], vec![0.5; w.len()], vec![0.25; g.o]);
        r::conv::conv_backward(&mut want_dx, &mut want_dw, &mut want_db, &f64s(&dout), &f64s(&x), &f64s(&w), &g, batch);

        let (gx, gw, gb, gdout) = (k.upload(&x), k.upload(&w), k.upload(&b), k.upload(&dout));
        let out = k.zeros(cpu.len());
        k.conv_forward(&g, batch, gx.all(), gw.all(), gb.all(), out.all());
        // dinp is written (start it at garbage), dw and db accumulate onto 0.5 and 0.25.
        let (dx, dw, db) = (k.upload(&vec![7.0; x.len()]), k.upload(&vec![0.5; w.len()]), k.upload(&vec![0.25; g.o]));
        k.conv_backward(&g, batch, gx.all(), gw.all(), gdout.all(), dw.all(), db.all(), Some(dx.all()));
        for (what, got, cpu, want) in [
            ("out", k.download(&out), &cpu, &want),
            ("dx", k.download(&dx), &cpu_dx, &want_dx),
            ("dw", k.download(&dw), &cpu_dw, &want_dw),
            ("db", k.download(&db), &cpu_db, &want_db),
        ] {
            // f32 sums of up to 5·28·28 terms (dw): within 1e-5 of the tensor's scale.
            close(&format!("{g:?} {what} vs the CPU engine"), &got, &f64s(cpu), 1e-5);
            close(&format!("{g:?} {what} vs the reference"), &got, want, 1e-5);
        }
    }
}

/// Each of `got` within `rel` of the CPU engine's f32 values and of the reference's.
fn agrees(what: &str, got: &[f32], cpu: &[f32], want: &[f64], rel: f64) {
    close(&format!("{what} vs the CPU engine"), got, &f64s(cpu), rel);
    close(&format!("{what} vs the reference"), got, want, rel);
}

#[test]
fn pooling_and_activations_match_the_cpu_engine_and_the_reference() {
    let Some(k) = kernels() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // The presets' pools (d2l's avg and relu's max on 28×28 and 10×10), and overlapping ones.
    for (kind, h, w, size, stride) in [
        (PoolKind::Avg, 28, 28, 2, 2),
        (PoolKind::Max, 10, 10, 2, 2),
        (PoolKind::Avg, 7, 6, 3, 2),
        (PoolKind::Max, 7, 6, 3, 2),
        (PoolKind::Max, 6, 5, 2, 1),
    ] {
        let (g, planes) = (PoolGeom { kind, h, w, size, stride }, 12);
        let (x, dout) = (randn(&mut rng, planes * h * w), randn(&mut rng, planes * g.oh() * g.ow()));
        let (mut cpu, mut cpu_dx) = (vec![0.0f32; dout.len()], vec![0.0f32; x.len()]);
        pool_forward(&mut cpu, &x, &g);
        pool_backward(&mut cpu_dx, &x, &dout, &g);
        let (mut want, mut want_dx) = (vec![0.0; dout.len()], vec![0.0; x.len()]);
        r::pool::pool_forward(&mut want, &f64s(&x), &g, planes);
        r::pool::pool_backward(&mut want_dx, &f64s(&x), &f64s(&dout), &g, planes);
        let (gx, gdout, out, dx) = (k.upload(&x), k.upload(&dout), k.zeros(dout.len()), k.upload(&vec![7.0; x.len()]));
        k.pool_forward(&g, planes, gx.all(), out.all());
        k.pool_backward(&g, planes, gx.all(), gdout.all(), dx.all());
        agrees(&format!("{g:?} out"), &k.download(&out), &cpu, &want, 1e-6);
        agrees(&format!("{g:?} dx"), &k.download(&dx), &cpu_dx, &want_dx, 1e-6);
    }
    for a in
        [Activation::Sigmoid, Activation::Tanh, Activation::ScaledTanh, Activation::Relu, Activation::LeakyRelu(0.1)]
    {
        // Away from ReLU's kink; wide enough to reach the flat tails.
        let x: Vec<f32> =
            randn(&mut rng, 1000).into_iter().map(|v| if v.abs() < 0.01 { 0.5 } else { v * 6.0 }).collect();
        let dout = randn(&mut rng, x.len());
        let (mut cpu, mut cpu_dx) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
        activation_forward(&mut cpu, &x, a);
        activation_backward(&mut cpu_dx, &x, &cpu, &dout, a);
        let (mut want, mut want_dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        r::activation::activation_forward(&mut want, &f64s(&x), a);
        r::activation::activation_backward(&mut want_dx, &f64s(&x), &f64s(&dout), a);
        let (gx, gdout, out, dx) = (k.upload(&x), k.upload(&dout), k.zeros(x.len()), k.zeros(x.len()));
        k.activation_forward(a, x.len(), gx.all(), out.all());
        k.activation_backward(a, x.len(), gx.all(), gdout.all(), dx.all());
        agrees(&format!("{a:?} out"), &k.download(&out), &cpu, &want, 1e-5);
        agrees(&format!("{a:?} dx"), &k.download(&dx), &cpu_dx, &want_dx, 1e-5);
    }
}

#[test]
fn linear_matches_the_cpu_engine_and_the_reference() {
    let Some(k) = kernels() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    // The presets' layers and an odd one; a batch of 64.
    for (batch, kk, n) in [(64, 400, 120), (64, 120, 84), (64, 84, 10), (5, 7, 4)] {
        let (x, w, b, dout) =
            (randn(&mut rng, batch * kk), randn(&mut rng, n * kk), randn(&mut rng, n), randn(&mut rng, batch * n));
        let mut cpu = vec![0.0f32; batch * n];
        linear_forward(&mut cpu, &x, &w, &b, batch, kk, n, Par::SERIAL);
        let (mut cpu_dx, mut cpu_dw, mut cpu_db) = (vec![0.0f32; x.len()], vec![0.5f32; w.len()], vec![0.25f32; n]);
        linear_backward(&mut cpu_dx, &mut cpu_dw, &mut cpu_db, &dout, &x, &w, batch, kk, n, Par::SERIAL);
        let mut want = vec![0.0; cpu.len()];
        r::linear::linear_forward(&mut want, &f64s(&x), &f64s(&w), &f64s(&b), batch, kk, n);
        let (mut want_dx, mut want_dw, mut want_db) = (vec![0.0; x.len()], vec![0.5; w.len()], vec![0.25; n]);
        r::linear::linear_backward(
            &mut want_dx,
            &mut want_dw,
            &mut want_db,
            &f64s(&dout),
            &f64s(&x),
            &f64s(&w),
            batch,
            kk,
            n,
        );
        let (gx, gw, gb, gdout) = (k.upload(&x), k.upload(&w), k.upload(&b), k.upload(&dout));
        let (out, dx, dw, db) = (
            k.zeros(cpu.len()),
            k.upload(&vec![7.0; x.len()]),
            k.upload(&vec![0.5; w.len()]),
            k.upload(&vec![0.25; n]),
        );
        k.linear_forward(batch, kk, n, gx.all(), gw.all(), gb.all(), out.all());
        k.linear_backward(batch, kk, n, gx.all(), gw.all(), gdout.all(), dw.all(), db.all(), dx.all());
        let what = format!("linear {kk}→{n}");
        agrees(&format!("{what} out"), &k.download(&out), &cpu, &want, 1e-5);
        agrees(&format!("{what} dx"), &k.download(&dx), &cpu_dx, &want_dx, 1e-5);
        agrees(&format!("{what} dw"), &k.download(&dw), &cpu_dw, &want_dw, 1e-5);
        agrees(&format!("{what} db"), &k.download(&db), &cpu_db, &want_db, 1e-5);
    }
}

#[test]
fn lenet5_layers_match_the_cpu_engine_and_the_reference() {
    let Some(k) = kernels() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // S2 and S4, and a map whose last row is under no block.
    for g in [
        SubsampleGeom { c: 6, h: 28, w: 28, size: 2 },
        SubsampleGeom { c: 16, h: 10, w: 10, size: 2 },
        SubsampleGeom { c: 2, h: 7, w: 6, size: 2 },
    ] {
        let batch = 4;
        let (x, coef, bias, dout) = (
            randn(&mut rng, batch * g.in_len()),
            randn(&mut rng, g.c),
            randn(&mut rng, g.c),
            randn(&mut rng, batch * g.out_len()),
        );
        let mut cpu = vec![0.0f32; dout.len()];
        subsample_forward(&mut cpu, &x, &coef, &bias, &g, batch);
        let (mut cpu_dx, mut cpu_dc, mut cpu_db) = (vec![0.0f32; x.len()], vec![0.5f32; g.c], vec![0.25f32; g.c]);
        subsample_backward(Some(&mut cpu_dx), &mut cpu_dc, &mut cpu_db, &dout, &x, &coef, &g, batch);
        let mut want = vec![0.0; dout.len()];
        r::subsample::subsample_forward(&mut want, &f64s(&x), &f64s(&coef), &f64s(&bias), &g, batch);
        let (mut want_dx, mut want_dc, mut want_db) = (vec![0.0; x.len()], vec![0.5; g.c], vec![0.25; g.c]);
        r::subsample::subsample_backward(
            &mut want_dx,
            &mut want_dc,
            &mut want_db,
            &f64s(&dout),
            &f64s(&x),
            &f64s(&coef),
            &g,
            batch,
        );
        let (gx, gc, gb, gdout) = (k.upload(&x), k.upload(&coef), k.upload(&bias), k.upload(&dout));
        let (out, dx, dc, db) =
            (k.zeros(dout.len()), k.upload(&vec![7.0; x.len()]), k.upload(&vec![0.5; g.c]), k.upload(&vec![0.25; g.c]));
        k.subsample_forward(&g, batch, gx.all(), gc.all(), gb.all(), out.all());
        k.subsample_backward(&g, batch, gx.all(), gc.all(), gdout.all(), dc.all(), db.all(), Some(dx.all()));
        agrees(&format!("{g:?} out"), &k.download(&out), &cpu, &want, 1e-5);
        agrees(&format!("{g:?} dx"), &k.download(&dx), &cpu_dx, &want_dx, 1e-5);
        agrees(&format!("{g:?} dcoef"), &k.download(&dc), &cpu_dc, &want_dc, 1e-5);
        agrees(&format!("{g:?} dbias"), &k.download(&db), &cpu_db, &want_db, 1e-5);
    }
    let (batch, kk, n) = (8, 84, 10);
    let x = randn(&mut rng, batch * kk);
    let centres: Vec<f32> = (0..n * kk).map(|_| if rng.gen_bool(0.5) { 1.0 } else { -1.0 }).collect();
    let dout = randn(&mut rng, batch * n);
    let (mut cpu, mut cpu_dx) = (vec![0.0f32; batch * n], vec![0.0f32; x.len()]);
    rbf_forward(&mut cpu, &x, &centres, batch, kk, n);
    rbf_backward(&mut cpu_dx, &x, &centres, &dout, batch, kk, n);
    let (mut want, mut want_dx) = (vec![0.0; batch * n], vec![0.0; x.len()]);
    r::rbf::rbf_forward(&mut want, &f64s(&x), &f64s(&centres), batch, kk, n);
    r::rbf::rbf_backward(&mut want_dx, &f64s(&dout), &f64s(&x), &f64s(&centres), batch, kk, n);
    let (gx, gc, gdout, out, dx) =
        (k.upload(&x), k.upload(&centres), k.upload(&dout), k.zeros(cpu.len()), k.zeros(x.len()));
    k.rbf_forward(batch, kk, n, gx.all(), gc.all(), out.all());
    k.rbf_backward(batch, kk, n, gx.all(), gc.all(), gdout.all(), dx.all());
    agrees("rbf out", &k.download(&out), &cpu, &want, 1e-5);
    agrees("rbf dx", &k.download(&dx), &cpu_dx, &want_dx, 1e-5);
}

#[test]
fn reruns_are_bit_identical() {
    let Some(k) = kernels() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (g, batch) = (CONVS[1], 16);
    let (x, w, b, dout) = (
        randn(&mut rng, batch * g.in_len()),
        randn(&mut rng, g.weight_len()),
        randn(&mut rng, g.o),
        randn(&mut rng, batch * g.out_len()),
    );
    let run = || {
        let (gx, gw, gb, gdout) = (k.upload(&x), k.upload(&w), k.upload(&b), k.upload(&dout));
        let (out, dx, dw, db) = (k.zeros(dout.len()), k.zeros(x.len()), k.zeros(w.len()), k.zeros(g.o));
        k.conv_forward(&g, batch, gx.all(), gw.all(), gb.all(), out.all());
        k.conv_backward(&g, batch, gx.all(), gw.all(), gdout.all(), dw.all(), db.all(), Some(dx.all()));
        [out, dx, dw, db].map(|buf| k.download(&buf).iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    };
    assert!(run() == run(), "two runs on {} differ", k.gpu().adapter.describe());
}

#[test]
fn device_choices_parse_and_resolve() {
    for (s, want) in [("cpu", DeviceChoice::Cpu), ("gpu", DeviceChoice::Gpu), ("auto", DeviceChoice::Auto)] {
        assert_eq!(s.parse::<DeviceChoice>().unwrap(), want);
        assert_eq!(want.to_string(), s);
    }
    assert!("tpu".parse::<DeviceChoice>().unwrap_err().contains("cpu, gpu or auto"));
    assert!(matches!(choose(DeviceChoice::Cpu), Ok(Chosen::Cpu { fallback: None })));
    // auto never fails: a hardware GPU, or the CPU with the reason.
    match choose(DeviceChoice::Auto).unwrap() {
        Chosen::Gpu(gpu) => assert!(!gpu.adapter.software, "auto took a software device"),
        Chosen::Cpu { fallback } => assert!(fallback.is_some_and(|why| !why.is_empty())),
    }
}

/// With the Vulkan loader pointed at no driver, there is no adapter: `lenet devices`
/// says so plainly, and nothing panics.
#[test]
fn no_adapter_is_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_lenet"))
        .arg("devices")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.contains("no GPU adapter found"), "{text}");
    assert!(text.contains("auto would run on the CPU"), "{text}");
    assert!(out.status.success(), "listing no devices is not a failure: {text}");
}

/// Batches gathered and scaled on the GPU from a split uploaded once as bytes: the CPU
/// engine's values to one rounding (one multiply-add per pixel, which a GPU may fuse), for d2l's 28×28 unit scaling and
/// lenet5's 32×32 frame with the paper's range; a split whose size is no multiple of 4
/// (bytes are packed four to a word) and repeated indices.
#[test]
fn gathered_batches_are_the_cpu_engines() {
    use lenet::internal::engine::cpu::CpuEngine;
    use lenet::internal::engine::Engine;
    use lenet::spec::Spec;
    let Some(k) = kernels() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let n = 103;
    let pixels: Vec<u8> = (0..n * 784).map(|_| rng.gen()).collect();
    let labels: Vec<u8> = (0..n).map(|_| rng.gen_range(0..10)).collect();
    let images = lenet::data::Images { count: n, rows: 28, cols: 28, pixels };
    let cpu = CpuEngine::new(1).unwrap();
    for preset in ["d2l", "lenet5"] {
        let input = Spec::preset(preset).unwrap().input;
        let indices: Vec<u32> = vec![102, 0, 5, 5, 77, 101, 3];
        let side = input.size;
        let (mut want_x, mut want_y) = (vec![0.0f32; indices.len() * side * side], vec![0.0f32; indices.len()]);
        let ex = cpu.upload_examples(&images, &labels, &input);
        cpu.gather(&ex, &indices, &mut want_x, &mut want_y);
        let gex = k.upload_examples(&images, &labels, &input);
        let (x, y) = (k.zeros(want_x.len()), k.zeros(want_y.len()));
        k.gather(&gex, &k.upload_indices(&indices), x.all(), y.all());
        close(&format!("{preset}: the gathered images"), &k.download(&x), &f64s(&want_x), 1e-7);
        assert_eq!(k.download(&y), want_y, "{preset}: the gathered labels");
    }
}

/// A training step's indices are staged with the recording's parameters: many batches in
/// one recording, a recording that runs out of room for them (and is submitted), and a
/// batch too big to stage (given a buffer of its own) all gather what the CPU gathers.
#[test]
fn staged_indices_gather_what_the_cpu_gathers() {
    use lenet::internal::engine::cpu::CpuEngine;
    use lenet::internal::engine::Engine;
    use lenet::spec::{InputSpec, Spec};
    let Some(k) = kernels() else { return };
    let engine = lenet::internal::engine::gpu::engine::GpuEngine::on(std::sync::Arc::new(k));
    let n = 1009;
    let pixels: Vec<u8> = (0..n * 4).map(|i| (i * 37 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let images = lenet::data::Images { count: n, rows: 2, cols: 2, pixels };
    let input = InputSpec { size: 2, ..Spec::preset("d2l").unwrap().input };
    let (gex, cpu) = (engine.upload_examples(&images, &labels, &input), CpuEngine::new(1).unwrap());
    let cex = cpu.upload_examples(&images, &labels, &input);
    // Two of 400,000 fill most of a recording's 1,048,576 words: the third is staged in
    // the next one; 700,000 is more than a recording stages.
    // Every gather recorded before anything is read back.
    let gathered: Vec<_> = [5usize, 400_000, 400_000, 400_000, 700_000, 3]
        .into_iter()
        .enumerate()
        .map(|(round, len)| {
            let indices: Vec<u32> = (0..len).map(|j| ((j * 7919 + round) % n) as u32).collect();
            let (x, y) = (engine.alloc(4 * len), engine.alloc(len));
            engine.gather(&gex, &indices, x.all(), y.all());
            (indices, x, y)
        })
        .collect();
    for (round, (indices, x, y)) in gathered.iter().enumerate() {
        let len = indices.len();
        let (mut want_x, mut want_y) = (vec![0.0f32; 4 * len], vec![0.0f32; len]);
        cpu.gather(&cex, indices, &mut want_x, &mut want_y);
        assert!(engine.download(y.all()) == want_y, "batch {round} of {len}: labels");
        close(&format!("batch {round} of {len}"), &engine.download(x.all()), &f64s(&want_x), 1e-7);
    }
}

/// Batches distorted as they are gathered on the GPU (the affine maps drawn on the host,
/// the elastic field and the resampling on the device) against the CPU's distorted images
/// gathered: the same bytes but where a sample falls within an f32 rounding of a byte
/// boundary (a GPU may fuse a multiply-add the CPU rounds twice): at most one level
/// apart, and at least 99.5 % of pixels the same. For the paper's distortions, with
/// rotation, and with the elastic field (strong: α 34, σ 4; and σ 2, more components),
/// on 28×28 (d2l) and padded to 32×32 (lenet5); then undistorted again.
#[test]
fn distorted_batches_are_the_cpus_distortions() {
    use lenet::internal::augment::{distort_into, draw_distortions, Augment};
    use lenet::internal::engine::cpu::CpuEngine;
    use lenet::internal::engine::Engine;
    use lenet::spec::Spec;
    let Some(k) = kernels() else { return };
    let engine = lenet::internal::engine::gpu::engine::GpuEngine::on(std::sync::Arc::new(k));
    // Digit-like images: a blob of ink somewhere near the middle, on zeros.
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let n = 64;
    let mut pixels = vec![0u8; n * 784];
    for img in pixels.chunks_mut(784) {
        let (y0, x0) = (rng.gen_range(4..12), rng.gen_range(4..12));
        for y in y0..y0 + 12 {
            for x in x0..x0 + 10 {
                img[y * 28 + x] = rng.gen();
            }
        }
    }
    let labels: Vec<u8> = (0..n).map(|_| rng.gen_range(0..10)).collect();
    let images = lenet::data::Images { count: n, rows: 28, cols: 28, pixels };
    let cpu = CpuEngine::new(1).unwrap();
    let indices: Vec<u32> = vec![3, 0, 63, 17, 17, 40, 5, 22];
    for preset in ["d2l", "lenet5"] {
        let input = Spec::preset(preset).unwrap().input;
        assert!(engine.distorts_on_device(&input, 28, 28));
        let side = input.size;
        for aug in ["paper", "rotate=10", "rotate=10,elastic", "translate=3,elastic=20:2"] {
            let aug: Augment = aug.parse().unwrap();
            let what = format!("{preset}, {aug}");
            let mut distorted = images.clone();
            distort_into(&images, &aug, 9, 2, &mut distorted);
            let (mut want_x, mut want_y) = (vec![0.0f32; indices.len() * side * side], vec![0.0f32; indices.len()]);
            cpu.gather(&cpu.upload_examples(&distorted, &labels, &input), &indices, &mut want_x, &mut want_y);

            let mut gex = engine.upload_examples(&images, &labels, &input);
            engine.set_distortions(&mut gex, &images, Some(&draw_distortions(&images, &aug, 9, 2)));
            let (x, y) = (engine.alloc(want_x.len()), engine.alloc(want_y.len()));
            engine.gather(&gex, &indices, x.all(), y.all());
            let (got_x, got_y) = (engine.download(x.all()), engine.download(y.all()));
            assert_eq!(got_y, want_y, "{what}: labels");
            let (scale, _) = lenet::internal::input::pixel_affine(input.normalize);
            let levels: Vec<f32> = got_x.iter().zip(&want_x).map(|(g, w)| ((g - w) / scale).abs()).collect();
            let worst = levels.iter().fold(0.0f32, |m, &v| m.max(v));
            let same = levels.iter().filter(|&&v| v < 0.01).count();
            assert!(worst <= 1.01, "{what}: a pixel {worst} levels off the CPU's");
            assert!(same * 1000 >= levels.len() * 995, "{what}: {same} of {} pixels the CPU's", levels.len());
            assert!(want_x.iter().zip(&got_x).any(|(w, g)| w != g) || same == levels.len());

            // Undistorted again: the originals.
            engine.set_distortions(&mut gex, &images, None);
            engine.gather(&gex, &indices, x.all(), y.all());
            let (mut plain, mut plain_y) = (vec![0.0f32; want_x.len()], vec![0.0f32; indices.len()]);
            cpu.gather(&cpu.upload_examples(&images, &labels, &input), &indices, &mut plain, &mut plain_y);
            close(&format!("{what}: undistorted"), &engine.download(x.all()), &f64s(&plain), 1e-7);
        }
    }
}

/// The criteria on the GPU: the weighted mean loss and the count of correct examples
/// (summed on the device) and ∂(mean loss)/∂outputs, against the CPU engine's f32 loss and
/// the f64 reference, for cross-entropy, eq. 9 (two j) and eq. 8, with and without class
/// weights, on a batch of 256.
#[test]
fn criteria_match_the_cpu_engine_and_the_reference() {
    use lenet::internal::layers::loss::batch_loss;
    use lenet::spec::Criterion;
    let Some(k) = kernels() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (batch, classes) = (256, 10);
    let labels: Vec<u8> = (0..batch).map(|_| rng.gen_range(0..10)).collect();
    let weights: Vec<f32> = (0..classes).map(|c| 0.5 + c as f32 * 0.1).collect();
    for criterion in [Criterion::CrossEntropy, Criterion::Map { j: 10.0 }, Criterion::Map { j: 0.1 }, Criterion::Mse] {
        let z: Vec<f32> = match criterion {
            Criterion::CrossEntropy => randn(&mut rng, batch * classes).into_iter().map(|v| v * 5.0).collect(),
            _ => (0..batch * classes).map(|_| -rng.gen_range(0.0f32..30.0)).collect(),
        };
        for w in [None, Some(&weights[..])] {
            let what = format!("{criterion:?} weighted {}", w.is_some());
            let mut cpu_dz = vec![0.0f32; z.len()];
            let cpu = batch_loss(criterion, Some(&mut cpu_dz), &z, &labels, w, classes);
            let mut want_dz = vec![0.0; z.len()];
            let w64 = w.map(f64s);
            let want = r::loss::loss(criterion, Some(&mut want_dz), &f64s(&z), &labels, w64.as_deref(), classes);
            let y: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
            let (gz, gy, gw) = (k.upload(&z), k.upload(&y), w.map(|w| k.upload(w)));
            let (dz, scratch, stats) = (k.zeros(z.len()), k.zeros(2 * batch), k.zeros(4));
            k.loss(
                criterion,
                batch,
                classes,
                gz.all(),
                gy.all(),
                gw.as_ref().map(|w| w.all()),
                dz.all(),
                &scratch,
                &stats,
            );
            let s = k.download(&stats);
            let mean = s[1] as f64 / s[0] as f64;
            assert!((mean - want.mean()).abs() <= 1e-5 * want.mean().abs(), "{what}: loss {mean} vs {}", want.mean());
            assert!((mean - cpu.mean()).abs() <= 1e-5 * cpu.mean().abs(), "{what}: loss {mean} vs {}", cpu.mean());
            assert_eq!((s[2] as usize, want.correct), (cpu.correct, cpu.correct), "{what}: correct");
            agrees(&format!("{what} dz"), &k.download(&dz), &cpu_dz, &want_dz, 1e-5);
        }
    }
}

#[path = "common/toy_idx.rs"]
mod toy_idx;

fn lenet_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lenet")).args(args).envs(env.iter().copied()).output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(
        !stdout.contains("panicked") && !stderr.contains("panicked"),
        "lenet {args:?} panicked:\n{stdout}\n{stderr}"
    );
    (out.status.success(), stdout, stderr)
}

/// The Vulkan loader pointed at no driver.
const NO_DRIVER: [(&str, &str); 3] = [
    ("VK_DRIVER_FILES", "/nonexistent/icd.json"),
    ("VK_ICD_FILENAMES", "/nonexistent/icd.json"),
    ("WGPU_BACKEND", "vulkan"),
];

/// The command line on the GPU: train says where it trains, the checkpoint resumes on
/// the CPU, eval and export --logits on the GPU give the CPU's accuracy and logits, and
/// predict runs there; `--device gpu` with no adapter is a clear error, `--device auto`
/// falls back to the CPU and says why.
#[test]
fn the_command_line_runs_on_the_gpu() {
    let Some(k) = kernels() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    toy_idx::write_toy_dataset(&data);
    let p = |path: &std::path::Path| path.to_str().unwrap().to_string();
    let run = dir.path().join("run");
    let (data_s, run_s) = (p(&data), p(&run));
    let train = [
        "--data-dir",
        &data_s,
        "train",
        "--dataset",
        "mnist",
        "--arch",
        "relu",
        "--optimizer",
        "adam",
        "--batch",
        "32",
        "--epochs",
        "1",
        "--run-dir",
        &run_s,
        "--device",
        "gpu",
    ];
    let (ok, out, err) = lenet_cli(&train, &[]);
    assert!(ok, "{out}\n{err}");
    let adapter = k.gpu().adapter.describe();
    assert!(out.contains(&format!("training on {adapter}")), "{out}");
    assert!(out.contains(&format!("examples/sec on {adapter}")), "{out}");

    let last = p(&run.join("last.safetensors"));
    let (ok, out, err) =
        lenet_cli(&["--data-dir", &data_s, "train", "--resume", &last, "--epochs", "2", "--device", "cpu"], &[]);
    assert!(ok && out.contains("resuming") && out.contains("training on cpu"), "{out}\n{err}");

    let accuracy = |device: &str| {
        let (ok, out, err) = lenet_cli(&["--data-dir", &data_s, "eval", &last, "--device", device], &[]);
        assert!(ok, "{out}\n{err}");
        out.lines().find(|l| l.starts_with("examples")).expect("the accuracy line").to_string()
    };
    assert_eq!(accuracy("gpu"), accuracy("cpu"));

    let logits = |device: &str| {
        let file = dir.path().join(format!("logits-{device}.safetensors"));
        let (ok, out, err) =
            lenet_cli(&["--data-dir", &data_s, "export", &last, "--logits", &p(&file), "--device", device], &[]);
        assert!(ok, "{out}\n{err}");
        let bytes = std::fs::read(&file).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = tensors.tensor("logits").unwrap();
        bytemuck::pod_collect_to_vec::<u8, f32>(t.data())
    };
    let (on_gpu, on_cpu) = (logits("gpu"), logits("cpu"));
    close("the exported logits", &on_gpu, &f64s(&on_cpu), 1e-4);

    let (ok, out, err) =
        lenet_cli(&["--data-dir", &data_s, "predict", &last, "--dataset", "mnist", "--device", "gpu"], &[]);
    assert!(ok && !out.is_empty(), "{out}\n{err}");

    // A batch larger than the device's largest buffer: a clear error, before anything runs.
    let big =
        ["--data-dir", &data_s, "bench", "--dataset", "mnist", "--device", "gpu", "--quick", "--batch", "16000000"];
    let (ok, out, err) = lenet_cli(&big, &[]);
    assert!(!ok && err.contains("a batch of 16000000 needs a buffer of") && err.contains("--batch"), "{out}\n{err}");

    // No adapter: `gpu` is an error that says so, `auto` runs on the CPU and says why.
    let (ok, out, err) = lenet_cli(&train, &NO_DRIVER);
    assert!(!ok && err.contains("no GPU adapter found") && err.contains("--device cpu"), "{out}\n{err}");
    let (ok, out, err) = lenet_cli(&["--data-dir", &data_s, "eval", &last, "--device", "auto"], &NO_DRIVER);
    assert!(
        ok && err.contains("--device auto: no GPU adapter found") && err.contains("running on the CPU"),
        "{out}\n{err}"
    );
}
