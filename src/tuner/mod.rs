//! The AutoRound tuner (sign-gradient rounding and clipping search), built up piece by piece.
//!
//! - [`calib`]: calibration files → shuffled, filtered token sequences, as the reference does.

pub mod block;
pub mod calib;
pub mod checkpoint;
pub mod head;
pub mod ops;
pub mod qdq;
pub mod run;
pub mod signround;
