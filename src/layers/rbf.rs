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
