"""Small torch models trained on Fashion-MNIST for shiftc's real-model tests.

- ``FashionCNN``: Conv+BN+ReLU blocks with depthwise-separable convs, pooling, Linear head.
- ``FashionViT``: pre-norm ViT (patch 7, d=64, erf-GELU MLP, softmax attention, mean-pool head).
- ``UnifiedNorm`` / ``FashionUNViT``: the same ViT with LayerNorm replaced by Unified Normalization.
- ``Segmenter``: ViT encoder + mask-transformer decoder on 56x56 Fashion-MNIST mosaics.
"""
import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin, cout, k=3, groups=1):
    """Conv2d (no bias, same padding) + BatchNorm2d + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FashionCNN(nn.Module):
    """28x28 -> 10 logits; ~66k parameters, two depthwise-separable blocks."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 32), nn.MaxPool2d(2),                 # 14x14
            conv_bn(32, 64), nn.MaxPool2d(2),                # 7x7
            conv_bn(64, 64, groups=64), conv_bn(64, 128, k=1),
            conv_bn(128, 128, groups=128), conv_bn(128, 256, k=1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(256, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class UnifiedNorm(nn.Module):
    """Unified Normalization over the last (channel) axis of N x T x C tokens.

    Inference: ``y = gamma * x / sqrt(rv + eps) + beta`` with a per-channel running second
    moment ``rv`` (no mean subtraction), i.e. a Mul + Add by constants once exported.
    Training normalises with the batch's E[x^2] over (N, T) and updates ``rv`` like BatchNorm.
    """

    def __init__(self, dim, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x):
        if self.training:
            var = x.pow(2).mean(dim=tuple(range(x.dim() - 1)))
            with torch.no_grad():
                self.running_var.lerp_(var, self.momentum)
        else:
            var = self.running_var
        return x * (self.weight * torch.rsqrt(var + self.eps)) + self.bias


class Attention(nn.Module):
    """Multi-head softmax self-attention written with explicit MatMul/Softmax."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(Norm(x)); x + MLP(Norm(x)) with erf-GELU."""

    def __init__(self, dim, heads, mlp_ratio=2, norm=nn.LayerNorm):
        super().__init__()
        self.norm1, self.attn = norm(dim), Attention(dim, heads)
        self.norm2 = norm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTEncoder(nn.Module):
    """Patch embedding (strided conv) + learned positions + pre-norm blocks + final norm."""

    def __init__(self, img=28, patch=4, dim=64, depth=4, heads=4, norm=nn.LayerNorm):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, (img // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, norm=norm) for _ in range(depth)])
        self.norm = norm(dim)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.norm(self.blocks(x))


class FashionViT(nn.Module):
    """28x28 -> 16 patch tokens (patch 7), d=64, 4 blocks, 4 heads, mean-pool + Linear head."""

    def __init__(self, num_classes=10, depth=4, norm=nn.LayerNorm):
        super().__init__()
        self.encoder = ViTEncoder(patch=7, depth=depth, norm=norm)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.head(self.encoder(x).mean(dim=1))


class FashionUNViT(FashionViT):
    """FashionViT with every LayerNorm replaced by UnifiedNorm."""

    def __init__(self, num_classes=10, depth=4):
        super().__init__(num_classes, depth, norm=UnifiedNorm)


class Segmenter(nn.Module):
    """56x56 mosaic -> per-pixel logits over ``num_classes`` (mask-transformer decoder).

    Encoder: ViT (patch 7 -> 8x8 tokens). Decoder: learned class embeddings are appended to the
    patch tokens, processed by ``dec_depth`` blocks, both L2-normalised; masks are their dot
    products (times a learned scale), reshaped to 8x8 and bilinearly upsampled to 56x56.
    """

    def __init__(self, num_classes=11, dim=64, depth=2, dec_depth=1, img=56, patch=7):
        super().__init__()
        self.grid, self.num_classes = img // patch, num_classes
        self.encoder = ViTEncoder(img=img, patch=patch, dim=dim, depth=depth)
        self.cls_emb = nn.Parameter(torch.randn(1, num_classes, dim) * 0.02)
        self.decoder = nn.Sequential(*[Block(dim, 4) for _ in range(dec_depth)])
        self.logit_scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        b, _, h, w = x.shape
        t = self.encoder(x)
        t = self.decoder(torch.cat([t, self.cls_emb.expand(b, -1, -1)], dim=1))
        patches, cls = t[:, :-self.num_classes], t[:, -self.num_classes:]
        patches = patches / patches.norm(dim=-1, keepdim=True)
        cls = cls / cls.norm(dim=-1, keepdim=True)
        masks = self.logit_scale * (patches @ cls.transpose(1, 2))  # b x T x K
        masks = masks.transpose(1, 2).reshape(b, self.num_classes, self.grid, self.grid)
        return F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)


def count_params(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
