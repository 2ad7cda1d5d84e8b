# Verbatim copy of ../shared/seed/scse_seed.py, so the compatibility test runs without shared/.
"""The scSE module exactly as the seed blog post gives it (its code, line breaks restored).

The post ("Exploring dual spatial and channel attention in PyTorch: a concise scSE module")
proposes this module and checks only that input (3, 32, 64, 64) gives output (3, 32, 64, 64).
It names, as future work: more efficient computation, other fusions of the two branches
(max, multiplication, gating), multi-scale use, and use in segmentation, detection and faces.
"""
import torch
import torch.nn as nn


class cSE(nn.Module):
    def __init__(self, in_channel, reduction=2):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(in_channel, in_channel // reduction, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channel // reduction, in_channel, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.fc(y)
        return x * y.expand_as(x)


class sSE(nn.Module):
    def __init__(self, in_channel):
        super().__init__()
        self.Conv1x1 = nn.Conv2d(in_channel, 1, 1, bias=False)

    def forward(self, x):
        y = self.Conv1x1(x)
        return x * torch.sigmoid(y)


class scSE(nn.Module):
    def __init__(self, in_channel):
        super().__init__()
        self.cse = cSE(in_channel)
        self.sse = sSE(in_channel)

    def forward(self, x):
        y_cse = self.cse(x)
        y_sse = self.sse(x)
        return y_cse + y_sse  # the post: "or other combinations, such as taking the maximum"


if __name__ == "__main__":
    input = torch.randn(3, 32, 64, 64)  # batch_size=3, channels=32, height=64, width=64
    net = scSE(32)
    output = net(input)
    print("input size:", input.size())
    print("output size:", output.size())
