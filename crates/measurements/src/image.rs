//! Signed image measurements (`ImageMeasurementsV2` JSON + cosign-style signature).
//! Filled in by the foundation work (issue: signed image measurements).
