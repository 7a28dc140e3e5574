use candle_core::Device;

use super::EncoderError;
use crate::config::DeviceChoice;

/// Picks the device for the encoder. `Auto` takes the first CUDA GPU when the binary was built
/// with the `cuda` feature and a GPU is present, and the CPU otherwise.
pub fn select_device(choice: DeviceChoice) -> Result<Device, EncoderError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        DeviceChoice::Cuda if !candle_core::utils::cuda_is_available() => Err(EncoderError::CudaUnavailable(
            "this binary was built without the `cuda` feature; rebuild with `cargo build --release --features cuda`".into(),
        )),
        DeviceChoice::Cuda => Device::new_cuda(0).map_err(|err| EncoderError::CudaUnavailable(format!("no usable GPU: {err}"))),
    }
}

/// Names a device for logs and metrics: "cpu" or "cuda:0".
pub fn device_label(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda:0".into(),
        Device::Metal(_) => "metal".into(),
    }
}
