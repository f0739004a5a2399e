"""PyTorch peer of jaxgen's DCGAN pair (``configs/gan.py:mnist``), for ``bench/cpu_peer.py``.

    .peer/bin/python bench/peers/dcgan.py train BATCH SECONDS eager|compile

The same networks and step as ``jaxgen.families.gan`` with ``n_critic = 1``, written again in
PyTorch (2 threads, float32, NCHW):
- generator: noise 100 -> dense to 7x7x128 -> [batch norm, ReLU, 3x3 conv to 4c, pixel shuffle]
  twice (128 -> 64 -> 1 channels) -> tanh; no bias before a batch norm;
- discriminator: 4x4 stride-2 convs 1 -> 64 -> 128 with LeakyReLU(0.2), batch norm (the batch's
  own statistics, no running averages) after the second, dense to one logit;
- weights N(0, 0.02), norm scales N(1, 0.02); Adam 2e-4, betas (0.5, 0.999) for both;
- one step: a discriminator update (fresh noise, the fakes detached, real and fake batches
  through D separately, non-saturating loss), then a generator update on new noise; each update
  also takes its gradient's global norm, as jaxgen logs it.
Prints one ``RESULT {json}`` line with ``img_s`` and ``peak_rss``, as the diffusion peer does.
"""

import sys

import timing
import torch
from torch import nn

torch.set_num_threads(2)


def init(module):
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


class Generator(nn.Module):
    def __init__(self, noise=100, channels=(128, 64), image_channels=1):
        super().__init__()
        self.c0 = channels[0]
        self.dense = nn.Linear(noise, 7 * 7 * channels[0], bias=False)
        outs = list(channels[1:]) + [image_channels]
        stages = []
        for i, (cin, cout) in enumerate(zip(channels, outs, strict=True)):
            last = i == len(outs) - 1
            stages += [
                nn.BatchNorm2d(cin, eps=1e-5, momentum=0.1),
                nn.ReLU(),
                nn.Conv2d(cin, 4 * cout, 3, padding=1, bias=last),
                nn.PixelShuffle(2),
            ]
        self.stages = nn.Sequential(*stages)

    def forward(self, z):
        x = self.dense(z).view(z.shape[0], self.c0, 7, 7)
        return torch.tanh(self.stages(x))


class Discriminator(nn.Module):
    def __init__(self, channels=(64, 128), image_channels=1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(image_channels, channels[0], 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels[0], channels[1], 4, 2, 1, bias=False),
            nn.BatchNorm2d(channels[1], track_running_stats=False),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(7 * 7 * channels[1], 1),
        )

    def forward(self, x):
        return self.net(x)[:, 0]


def grad_norm(params):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))


def main():
    what, batch, seconds, mode = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    if what != "train":
        raise SystemExit("dcgan.py: only 'train'")
    torch.manual_seed(0)
    g, d = init(Generator()), init(Discriminator())
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    gc = torch.compile(g) if mode == "compile" else g
    dc = torch.compile(d) if mode == "compile" else d
    real = torch.rand(batch, 1, 28, 28) * 2 - 1
    softplus = nn.functional.softplus

    def step():
        fake = gc(torch.randn(batch, 100)).detach()
        d_loss = softplus(-dc(real)).mean() + softplus(dc(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        grad_norm(list(d.parameters()))
        opt_d.step()
        g_loss = softplus(-dc(gc(torch.randn(batch, 100)))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        grad_norm(list(g.parameters()))
        opt_g.step()
        return d_loss, g_loss

    timing.report_train("dcgan", step, batch, seconds, mode)


if __name__ == "__main__":
    main()
