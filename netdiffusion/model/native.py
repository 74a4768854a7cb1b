"""The native backend: a class-conditional diffusion transformer over packet rows (CPU-trainable).

Why rows, not an image UNet: an nPrint flow is 1,024 rows x 1,408 bits and mostly absent; a
UNet would spend its compute convolving grey padding and must also learn *which* pixels are
absent. Here each packet row is one token (its bits and its presence mask projected to ``dim``),
a stack of diffusers ``BasicTransformerBlock``s attends across the packets of a flow (so ports,
addresses and sequence numbers stay consistent), and the head predicts one logit per bit.

Diffusion runs on "analog bits" (set = +1, unset = -1, Chen et al. 2022) with the standard
diffusers schedulers in ``sample`` (x0) prediction mode; the x0 estimate is ``tanh(logit / 2)``
(the expected bit under the predicted Bernoulli) and the loss is binary cross-entropy on present
bits only. Absent bits never enter the loss or the output: they are fixed by the presence mask of
a real template flow of the class, the exact structural conditioning the paper's ControlNet only
approximates from edges. Classifier-free guidance comes from class dropout (a null class).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# packets before the flow's end told apart by the end-distance input; farther ones share one embedding
END_RANGE = 64

SAMPLERS = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "dpmsolver": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
}


class PacketDiffusionTransformer(ModelMixin, ConfigMixin):
    """Per-bit logits for a noisy flow, given timestep, class and presence mask."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, width: int, num_classes: int, dim: int = 128, layers: int = 3, heads: int = 4,
                 ff_mult: int = 2, max_packets: int = 1024, header_bits: list[int] | None = None,
                 direction_input: bool = False, end_input: bool = False) -> None:
        super().__init__()
        self.in_proj = nn.Linear(width, dim)
        # The mask enters as each header's present share (the mask is exactly determined by it for
        # nPrint data): 2H numbers per row instead of W, which halves the input projection's cost.
        header_bits = list(header_bits) if header_bits else [width]
        if sum(header_bits) != width:
            raise ValueError(f"header_bits {header_bits} do not add up to width {width}")
        onehot = torch.zeros(width, len(header_bits))
        start = 0
        for i, n in enumerate(header_bits):
            onehot[start : start + n, i] = 1.0 / n
            start += n
        self.register_buffer("header_share", onehot, persistent=False)
        self.mask_proj = nn.Linear(2 * len(header_bits), dim)
        # each packet's direction (the template's, in generation) as a second structural input:
        # without it the model guessed from its own noisy address bits which end sent a row, and
        # generated flows often began with the server's packet (docs/model.md)
        self.direction_embed = nn.Embedding(2, dim) if direction_input else None
        # packets left before the flow's end (0 = last), from the template's length: in a batch the
        # longest flow has no padding after it, so without this nothing told the model where a flow
        # closes, and FINs were ~15x rarer than in real flows (docs/model.md)
        self.end_embed = nn.Embedding(END_RANGE + 1, dim) if end_input else None
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)
        self.time_embed = TimestepEmbedding(256, dim)
        self.class_embed = nn.Embedding(num_classes + 1, dim)  # last index = null class (CFG)
        self.adaln = nn.Linear(dim, 6 * dim)
        self.blocks = nn.ModuleList(
            BasicTransformerBlock(dim, heads, dim // heads, activation_fn="gelu-approximate",
                                  norm_type="ada_norm_single", norm_elementwise_affine=False,
                                  norm_eps=1e-6, ff_inner_dim=dim * ff_mult)
            for _ in range(layers)
        )
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.out_mod = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, width)
        self.gradient_checkpointing = False

    @property
    def null_class(self) -> int:
        return int(self.config.num_classes)

    def forward(self, sample: torch.Tensor, mask: torch.Tensor, timestep: torch.Tensor,
                class_labels: torch.Tensor, row_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, direction: torch.Tensor | None = None,
                to_end: torch.Tensor | None = None) -> torch.Tensor:
        """``sample``/``mask``: (B, T, W) float; ``row_mask``: (B, T) 1 for real packets;
        ``direction``: (B, T) 0 initiator / 1 responder (models built with ``direction_input``);
        ``to_end``: (B, T) packets after this one in its flow (models built with ``end_input``)."""
        b, t, _ = sample.shape
        if positions is None:
            positions = torch.arange(t, device=sample.device).expand(b, t)
        pos = get_timestep_embedding(positions.reshape(-1), self.config.dim, flip_sin_to_cos=True,
                                     downscale_freq_shift=0).reshape(b, t, -1).to(sample.dtype)
        share = mask @ self.header_share
        h = self.in_proj(sample * mask) + self.mask_proj(torch.cat([share, (share > 0).to(share.dtype)], -1)) + pos
        if self.direction_embed is not None:
            if direction is None:
                raise ValueError("this model takes each packet's direction (direction_input)")
            h = h + self.direction_embed(direction.long().clamp(0, 1))
        if self.end_embed is not None:
            if to_end is None:
                raise ValueError("this model takes each packet's distance to the flow's end (end_input)")
            h = h + self.end_embed(to_end.long().clamp(0, END_RANGE))
        cond = self.time_embed(self.time_proj(timestep).to(h.dtype)) + self.class_embed(class_labels)
        cond6 = self.adaln(F.silu(cond))
        bias = None
        if row_mask is not None:
            bias = ((1.0 - row_mask.to(h.dtype)) * -1e4)[:, None, :]
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                h = torch.utils.checkpoint.checkpoint(block, h, bias, None, None, cond6, use_reentrant=False)
            else:
                h = block(h, attention_mask=bias, timestep=cond6)
        shift, scale = self.out_mod(F.silu(cond)).chunk(2, dim=-1)
        h = self.norm_out(h) * (1 + scale[:, None]) + shift[:, None]
        return self.out_proj(h)


def make_train_scheduler(diffusion: dict) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=int(diffusion.get("train_timesteps", 1000)),
                         beta_schedule=diffusion.get("beta_schedule", "squaredcos_cap_v2"),
                         prediction_type="sample", clip_sample=False)


def make_sampler(diffusion: dict, name: str | None = None):
    """A diffusers scheduler for sampling, configured for x0 ("sample") prediction."""
    name = name or diffusion.get("sampler", "ddim")
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    base = make_train_scheduler(diffusion)
    return SAMPLERS[name].from_config(base.config, prediction_type="sample")


def model_null_class(model: nn.Module) -> int:
    """The null-class index of a (possibly DDP- or peft-wrapped) model."""
    while not isinstance(model, PacketDiffusionTransformer):
        model = getattr(model, "module", None) or model.get_base_model()
    return model.null_class


def bits_to_tensors(bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 1/0/-1 -> (x0 in {+1,-1} with 0 where absent, presence mask as float)."""
    mask = (bits != -1).to(torch.float32)
    x0 = (bits == 1).to(torch.float32) * 2 - 1
    return x0 * mask, mask


def diffusion_loss(model: nn.Module, scheduler: DDPMScheduler, bits: torch.Tensor, class_labels: torch.Tensor,
                   row_mask: torch.Tensor, positions: torch.Tensor, generator: torch.Generator | None = None,
                   with_accuracy: bool = False, class_dropout: float = 0.0,
                   direction: torch.Tensor | None = None,
                   to_end: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """BCE on present bits of the x0 prediction at a random timestep (and bit accuracy if asked).

    Kept lean: on CPU the elementwise passes over (batch, rows, bits) cost as much as the matmuls."""
    x0, mask = bits_to_tensors(bits)
    b = bits.shape[0]
    # random numbers come from ``generator``'s device (one on the GPU saves copying the noise)
    rand_device = generator.device if generator is not None else x0.device
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator, device=rand_device)
    noise = torch.randn(x0.shape, generator=generator, device=rand_device).to(x0.device)
    t = t.to(x0.device)
    if class_dropout > 0:  # null class for classifier-free guidance
        drop = (torch.rand(b, generator=generator, device=rand_device) < class_dropout).to(x0.device)
        class_labels = torch.where(drop, torch.full_like(class_labels, model_null_class(model)), class_labels)
    alpha = scheduler.alphas_cumprod.to(x0.device)[t].to(x0.dtype)
    noisy = alpha.sqrt()[:, None, None] * x0 + (1 - alpha).sqrt()[:, None, None] * noise
    logits = model(noisy, mask, t, class_labels, row_mask=row_mask, positions=positions, direction=direction,
                   to_end=to_end)
    target = (x0 + 1) * 0.5
    denom = mask.sum().clamp_min(1.0)
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, weight=mask, reduction="sum") / denom
    acc = None
    if with_accuracy:
        with torch.no_grad():
            acc = (((logits > 0) == (x0 > 0)) & mask.bool()).sum() / denom
    return loss, acc


@torch.no_grad()
def sample(model: PacketDiffusionTransformer, mask: torch.Tensor, class_labels: torch.Tensor,
           row_mask: torch.Tensor, scheduler, steps: int, guidance_scale: float = 1.0,
           generator: torch.Generator | None = None,
           direction: torch.Tensor | None = None,
           to_end: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate bits for flows whose presence ``mask`` (B, T, W) comes from real templates.

    Returns ``(bits int8 with -1 where absent, probability of a set bit)``."""
    maskf = mask.to(torch.float32)
    rand_device = generator.device if generator is not None else maskf.device
    x = torch.randn(maskf.shape, generator=generator, device=rand_device).to(maskf.device)
    x = x * scheduler.init_noise_sigma * maskf
    scheduler.set_timesteps(steps, device=maskf.device)
    null = torch.full_like(class_labels, model.null_class)
    logits = torch.zeros_like(maskf)
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in scheduler.timesteps:
        tt = t.expand(maskf.shape[0])
        x_in = scheduler.scale_model_input(x, t)
        logits = model(x_in, maskf, tt, class_labels, row_mask=row_mask, direction=direction, to_end=to_end)
        if guidance_scale != 1.0:
            uncond = model(x_in, maskf, tt, null, row_mask=row_mask, direction=direction, to_end=to_end)
            logits = uncond + guidance_scale * (logits - uncond)
        x0 = torch.tanh(logits / 2)
        x = scheduler.step(x0, t, x, **step_kwargs).prev_sample * maskf
    prob = torch.sigmoid(logits)
    bits = torch.where(mask.bool(), (logits > 0).to(torch.int8), torch.full_like(mask, -1, dtype=torch.int8))
    return bits, prob
