//! Euclidean radial basis function outputs (LeNet-5's output layer, section II-B of
//! the paper): y_i = Σ_j (x_j − c_ij)², with fixed ±1 centres c_i, one stylised
//! bitmap per class. The layer outputs z_i = −y_i, so that the highest output is
//! the nearest bitmap, as the highest logit is any other network's prediction.

use super::Real;

/// The name the spec gives the built-in bitmaps.
pub const DIGITS_7X12_NAME: &str = "digits-7x12";

/// The ten digits as 7×12 pictures, `#` = +1, `.` = −1, in the spirit of Fig. 3 of
/// the paper (which draws its whole ASCII set this way). F6's 84 units are read as
/// these 12 rows of 7.
pub const DIGITS_7X12: [&str; 10] = [
    "..###.. .#...#. #.....# #.....# #.....# #.....# #.....# #.....# #.....# #.....# .#...#. ..###..",
    "...#... ..##... .#.#... ...#... ...#... ...#... ...#... ...#... ...#... ...#... ...#... .#####.",
    "..###.. .#...#. #.....# ......# .....#. ....#.. ...#... ..#.... .#..... #...... #...... #######",
    ".#####. #.....# ......# ......# .....#. ..###.. .....#. ......# ......# ......# #.....# .#####.",
    ".....#. ....##. ...#.#. ..#..#. .#...#. #....#. ####### .....#. .....#. .....#. .....#. .....#.",
    "####### #...... #...... #...... ######. ......# ......# ......# ......# ......# #.....# .#####.",
    "..####. .#..... #...... #...... #.###.. ##...#. #.....# #.....# #.....# #.....# .#...#. ..###..",
    "####### ......# ......# .....#. ....#.. ...#... ...#... ..#.... ..#.... ..#.... ..#.... ..#....",
    "..###.. .#...#. #.....# #.....# .#...#. ..###.. .#...#. #.....# #.....# #.....# .#...#. ..###..",
    "..###.. .#...#. #.....# #.....# #.....# .#...## ..###.# ......# ......# .....#. ....#.. .###...",
];

/// A picture's values, row by row: `#` is +1, `.` is −1; rows are separated by
/// white space or `/`.
pub fn parse_picture(picture: &str) -> Result<Vec<f32>, String> {
    picture
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '/')
        .map(|c| match c {
            '#' => Ok(1.0),
            '.' => Ok(-1.0),
            other => Err(format!("bitmap character {other:?} is neither '#' (+1) nor '.' (−1)")),
        })
        .collect()
}

/// out (B, N) = −Σ_j (inp (B, K) − centres (N, K))².
pub fn rbf_forward<T: Real>(out: &mut [T], inp: &[T], centres: &[T], batch: usize, k: usize, n: usize) {
    for b in 0..batch {
        let x = &inp[b * k..(b + 1) * k];
        for (i, o) in out[b * n..(b + 1) * n].iter_mut().enumerate() {
            let c = &centres[i * k..(i + 1) * k];
            *o = -x.iter().zip(c).map(|(&xj, &cj)| (xj - cj) * (xj - cj)).sum::<T>();
        }
    }
}

/// dinp (B, K) = Σ_i dout_i · ∂z_i/∂x = Σ_i dout_i · (−2)(x − c_i). No parameters.
pub fn rbf_backward<T: Real>(dinp: &mut [T], inp: &[T], centres: &[T], dout: &[T], batch: usize, k: usize, n: usize) {
    let two = T::one() + T::one();
    for b in 0..batch {
        let x = &inp[b * k..(b + 1) * k];
        let dx = &mut dinp[b * k..(b + 1) * k];
        dx.fill(T::zero());
        for (i, &d) in dout[b * n..(b + 1) * n].iter().enumerate() {
            let c = &centres[i * k..(i + 1) * k];
            for ((g, &xj), &cj) in dx.iter_mut().zip(x).zip(c) {
                *g += -two * d * (xj - cj);
            }
        }
    }
}

/// The exact second derivative of LeNet-5's criteria with respect to each input x_j
/// of the RBF layer, for one pattern (the curvature SDLM starts its backward pass
/// from; it does not depend on the label). With g_ij = ∂y_i/∂x_j = 2(x_j − c_ij):
/// - equation 8, E = y_label: ∂²E/∂x_j² = 2;
/// - equation 9, E = y_label + log(e^(−j) + Σ_i e^(−y_i)), with p_i = e^(−y_i)/(e^(−j) +
///   Σ_k e^(−y_k)) and p_r = 1 − Σ_i p_i the rubbish class's share:
///   ∂²E/∂x_j² = 2·p_r + Σ_i p_i g_ij² − (Σ_i p_i g_ij)², never negative.
pub fn criterion_curvature<T: Real>(h: &mut [T], x: &[T], centres: &[T], j: Option<T>) {
    let (k, n) = (x.len(), centres.len() / x.len());
    let two = T::one() + T::one();
    let Some(j) = j else {
        h.fill(two);
        return;
    };
    let y: Vec<T> = (0..n).map(|i| x.iter().zip(&centres[i * k..]).map(|(&a, &c)| (a - c) * (a - c)).sum()).collect();
    // Softmax of (−y_i, −j), shifted by the largest for stability.
    let top = y.iter().fold(-j, |m, &v| m.max(-v));
    let rubbish = (-j - top).exp();
    let e: Vec<T> = y.iter().map(|&v| (-v - top).exp()).collect();
    let total = rubbish + e.iter().copied().sum::<T>();
    let p: Vec<T> = e.iter().map(|&v| v / total).collect();
    let p_r = rubbish / total;
    // The label's term contributes 2 and the log's −2·Σ_i p_i: together 2·p_r.
    for (jx, hj) in h.iter_mut().enumerate() {
        let (mut mean, mut mean_sq) = (T::zero(), T::zero());
        for (i, &pi) in p.iter().enumerate() {
            let g = two * (x[jx] - centres[i * k + jx]);
            mean += pi * g;
            mean_sq += pi * g * g;
        }
        *hj = two * p_r + mean_sq - mean * mean;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_digit_is_a_7x12_picture_and_they_differ() {
        let codes: Vec<Vec<f32>> = DIGITS_7X12.iter().map(|p| parse_picture(p).unwrap()).collect();
        for (d, p) in DIGITS_7X12.iter().enumerate() {
            let rows: Vec<&str> = p.split_whitespace().collect();
            assert_eq!(rows.len(), 12, "digit {d}");
            assert!(rows.iter().all(|r| r.len() == 7), "digit {d}: {rows:?}");
        }
        // Every pair differs in enough places to be told apart (a distance of 4 each).
        for a in 0..10 {
            for b in a + 1..10 {
                let differ = codes[a].iter().zip(&codes[b]).filter(|(x, y)| x != y).count();
                assert!(differ >= 10, "digits {a} and {b} differ in only {differ} places");
            }
        }
        assert!(parse_picture("#.x").is_err());
    }
}
