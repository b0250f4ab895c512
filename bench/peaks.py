"""Dense peak TFLOP/s per GPU model and math mode, for MFU.

Figures are NVIDIA's datasheet / architecture-whitepaper numbers for DENSE
math: where a datasheet quotes "with sparsity" figures (marked *), the dense
figure is half of it.  GeForce fp16/bf16 figures are tensor-core rates with
FP32 accumulate (what autocast uses), not the FP16-accumulate ones.  None
means the device has no such math (V100/T4 have no TF32 or BF16 tensor
cores): MFU is then null rather than a guess.  An unknown device also gets
None -- never a guess.

Keys: "fp32" (CUDA-core FP32), "tf32", "fp16", "bf16" (tensor cores).
"""

import re

# name -> {math mode: dense TFLOP/s}
PEAKS = {
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},  # SXM & PCIe
    "A10": {"fp32": 31.2, "tf32": 62.5, "fp16": 125.0, "bf16": 125.0},
    "H100 SXM": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5},
    "GH200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H200 SXM": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5},
    "L4": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
    "L40": {"fp32": 90.5, "tf32": 90.5, "fp16": 181.0, "bf16": 181.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "fp16": 366.0, "bf16": 366.0},
    "RTX 3090": {"fp32": 35.6, "tf32": 35.6, "fp16": 71.0, "bf16": 71.0},
    "RTX 4090": {"fp32": 82.6, "tf32": 82.6, "fp16": 165.2, "bf16": 165.2},
    "V100 SXM": {"fp32": 15.7, "tf32": None, "fp16": 125.0, "bf16": None},
    "V100 PCIe": {"fp32": 14.0, "tf32": None, "fp16": 112.0, "bf16": None},
    "V100S": {"fp32": 16.4, "tf32": None, "fp16": 130.0, "bf16": None},
    "T4": {"fp32": 8.1, "tf32": None, "fp16": 65.0, "bf16": None},
}

# (pattern on the NVML / framework device name, PEAKS key); first match wins,
# so the specific variants come before the general ones.
_MATCHERS = [
    (r"GH200", "GH200"),
    (r"H200.*NVL", "H200 NVL"),
    (r"H200", "H200 SXM"),
    (r"H100.*NVL", "H100 NVL"),
    (r"H100.*PCIe", "H100 PCIe"),
    (r"H100", "H100 SXM"),  # "NVIDIA H100 80GB HBM3" is the SXM part
    (r"A100", "A100"),
    (r"\bA10\b", "A10"),
    (r"L40S", "L40S"),
    (r"\bL40\b", "L40"),
    (r"\bL4\b", "L4"),
    (r"RTX 3090(?! Ti)", "RTX 3090"),
    (r"RTX 4090(?! D)", "RTX 4090"),
    (r"V100S", "V100S"),
    (r"V100-SXM|V100 SXM", "V100 SXM"),
    (r"V100", "V100 PCIe"),
    (r"\bT4\b", "T4"),
]


def device_key(device_name):
    """The PEAKS key for a device name such as "NVIDIA H100 80GB HBM3", or None."""
    if not device_name:
        return None
    for pattern, key in _MATCHERS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return key
    return None


def peak_tflops(device_name, math):
    """Dense peak TFLOP/s of one device for math mode `math`, or None."""
    key = device_key(device_name)
    if key is None:
        return None
    return PEAKS[key].get(math)
