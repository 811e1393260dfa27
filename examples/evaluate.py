"""Measure FP32 accuracy / mIoU of exported ONNX models with onnxruntime (batch-1 graphs)."""
import numpy as np
import onnxruntime as ort


def session(path):
    """Single-threaded CPU onnxruntime session (deterministic, polite on shared machines)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_predict(path, x):
    """Run a batch-1 ONNX model on every row of x (N x ...); return stacked outputs."""
    sess = session(path)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def accuracy(logits, labels):
    """Top-1 accuracy of N x C logits."""
    return float((logits.argmax(1) == labels).mean())


def mean_iou(pred, target, num_classes):
    """Mean over classes of IoU accumulated over all pixels (classes absent from both skipped)."""
    ious = []
    for c in range(num_classes):
        p, t = pred == c, target == c
        union = np.logical_or(p, t).sum()
        if union:
            ious.append(np.logical_and(p, t).sum() / union)
    return float(np.mean(ious))


def onnx_accuracy(path, x, labels):
    """Top-1 accuracy of an ONNX classifier on preprocessed inputs x."""
    return accuracy(onnx_predict(path, x), labels)


def onnx_miou(path, x, masks, num_classes):
    """mIoU of an ONNX segmenter (N x K x H x W logits) against integer masks."""
    return mean_iou(onnx_predict(path, x).argmax(1), masks, num_classes)
