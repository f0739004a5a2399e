"""PyTorch peer of jaxgen's GPT prior train step (``configs/gpt.py:mnist,cond`` over
``configs/vqvae.py:mnist``), for ``bench/cpu_peer.py``.

    .peer/bin/python bench/peers/gpt.py train BATCH SECONDS eager|compile

The same work as ``jaxgen.families.gpt.train_step``, written again in PyTorch (2 threads,
float32):
- the frozen tokenizer: the VQ-VAE encoder (3x3 stem to 32, 4x4 stride-2 convolutions to 32 and
  64 channels, two residual blocks of hidden width 32, a 1x1 convolution to D = 64) and the
  nearest of K = 512 codes, without gradients: 28x28 images -> 7x7 = 49 codes;
- VQGAN's input noise: each input code kept with probability 0.9, else a uniform code; the class
  replaced by the null class for 10% of examples;
- the transformer: [class, c_1..c_48] -> 49 x 512 logits; width 128, 4 pre-LayerNorm blocks of
  4-head causal self-attention (no key bias) and a tanh-GELU MLP of width 512, learned positions;
- cross-entropy in bits per code, backward, the gradient's global norm, Adam (1e-3 after 100
  warm-up steps, cosine decay).
Prints one ``RESULT {json}`` line with ``img_s`` and ``peak_rss``.
"""

import math
import sys

import timing
import torch
from torch import nn
from torch.nn import functional as F

torch.set_num_threads(2)
K, D, CLASSES, LENGTH = 512, 64, 10, 49


class Residual(nn.Module):
    def __init__(self, channels, hidden):
        super().__init__()
        self.a = nn.Conv2d(channels, hidden, 3, padding=1)
        self.b = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        return x + self.b(F.relu(self.a(F.relu(x))))


class Encoder(nn.Module):
    def __init__(self, channels=(32, 64), res_blocks=2, res_hidden=32):
        super().__init__()
        self.stem = nn.Conv2d(1, channels[0], 3, padding=1)
        downs, c_in = [], channels[0]
        for c in channels:
            downs.append(nn.Conv2d(c_in, c, 4, stride=2, padding=1))
            c_in = c
        self.downs = nn.ModuleList(downs)
        self.res = nn.Sequential(*[Residual(c_in, res_hidden) for _ in range(res_blocks)])
        self.out = nn.Conv2d(c_in, D, 1)

    def forward(self, x):
        h = self.stem(2.0 * x - 1.0)
        for down in self.downs:
            h = down(F.relu(h))
        return self.out(F.relu(self.res(h)))


class Block(nn.Module):
    def __init__(self, width, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x):
        b, t, w = x.shape
        h = self.ln1(x)
        split = lambda a: a.view(b, t, self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, w))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class CodeTransformer(nn.Module):
    def __init__(self, width=128, depth=4, heads=4, mlp_ratio=4):
        super().__init__()
        self.token = nn.Embedding(K, width)
        self.klass = nn.Embedding(CLASSES + 1, width)
        self.pos = nn.Parameter(0.02 * torch.randn(LENGTH + 1, width))
        self.blocks = nn.ModuleList([Block(width, heads, mlp_ratio) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, K)
        for e in (self.token, self.klass):
            nn.init.normal_(e.weight, 0.0, 0.02)

    def forward(self, tokens, labels):
        x = torch.cat([self.klass(labels)[:, None], self.token(tokens)], dim=1)
        x = x + self.pos[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def main():
    what, batch, seconds, mode = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    if what != "train":
        raise SystemExit("gpt.py: only 'train'")
    torch.manual_seed(0)
    encoder = Encoder().eval()
    codebook = torch.randn(K, D)
    model = CodeTransformer()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    warmup, total = 100, 2000

    def lr_at(step):
        if step < warmup:
            return step / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    m = torch.compile(model) if mode == "compile" else model
    enc = torch.compile(encoder) if mode == "compile" else encoder
    images = torch.rand(batch, 1, 28, 28)
    labels = torch.arange(batch) % CLASSES

    def step():
        with torch.no_grad():
            z = enc(images).permute(0, 2, 3, 1).reshape(batch, LENGTH, D)
            dist = (z * z).sum(-1, keepdim=True) - 2 * z @ codebook.T + (codebook**2).sum(-1)
            codes = dist.argmin(-1)
        keep = torch.rand(batch, LENGTH) < 0.9
        inputs = torch.where(keep, codes, torch.randint(0, K, (batch, LENGTH)))
        y = torch.where(torch.rand(batch) < 0.1, torch.full_like(labels, CLASSES), labels)
        logits = m(inputs[:, :-1], y)
        loss = F.cross_entropy(logits.reshape(-1, K), codes.reshape(-1)) / math.log(2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        opt.step()
        sched.step()
        return loss

    timing.report_train("gpt", step, batch, seconds, mode)


if __name__ == "__main__":
    main()
