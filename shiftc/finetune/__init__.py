"""Shift-aware fine-tuning: ONNX or torch in, ONNX on shiftc's shift-code grid out (docs/FINETUNE.md)."""
