"""Stage ``vae``: the first stage on single slices, with the optional PatchGAN and perceptual loss.

``model.vae.kind`` picks it: ``kl`` (default) trains the KL autoencoder with L1 + KL; ``vq`` the VQ-GAN
autoencoder (models/vq.py) with L1 + commitment loss, its codebook updated by EMA, and logs the code usage
(``vq/perplexity``, ``vq/codes_used`` of each step's global batch, ``vq/restarts`` so far).

The output bundle holds the trained first stage, ``scale_factor = 1 / std`` of the training latents (KL
posterior means or VQ codes; recorded in the provenance) and freshly initialised UNets, listed as untrained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..bundles import record_stage, start_bundle, with_component
from ..data.datasets import SliceDataset, torch_generator
from ..engine.loop import StepContext, Task
from .common import save_val_montage, split_cases, val_case


class _Reconstruct(nn.Module):
    """DDP-friendly forward: x and the posterior noise in, reconstruction, mean, log-variance out."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, noise: torch.Tensor):
        mean, logvar = self.vae.posterior(x)
        z = mean + torch.exp(0.5 * logvar) * noise
        return self.vae.decode(z), mean, logvar


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)), summed over latent dimensions, averaged over the batch."""
    return 0.5 * torch.sum(mean.pow(2) + logvar.exp() - logvar - 1.0, dim=(1, 2, 3)).mean()


def vq_logs(quantizer, counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Code usage of one step (``counts`` per code) and the restarts so far."""
    from napari_gem3d.models.codebook import codebook_perplexity

    return {"vq/perplexity": codebook_perplexity(counts), "vq/codes_used": (counts > 0).sum().float(),
            "vq/restarts": quantizer.restarts.detach().float()}


class VAETask(Task):
    main = "vae"

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        self.bundle = start_bundle(cfg, required=False)
        self.train_cases, self.val_cases = split_cases(cfg, self.bundle.config.labels, info)
        self.vq = self.bundle.vae.config.kind == "vq"
        self.recon = self.bundle.vae if self.vq else _Reconstruct(self.bundle.vae)  # VQ forward: training pass
        lc = cfg.vae
        self.disc = self.adv = self.perceptual = None
        if lc.adv_weight > 0:
            from monai.losses import PatchAdversarialLoss
            from monai.networks.nets import PatchDiscriminator

            self.disc = PatchDiscriminator(spatial_dims=2, num_layers_d=lc.disc_layers, channels=lc.disc_channels,
                                           in_channels=1, out_channels=1, norm="INSTANCE")
            self.adv = PatchAdversarialLoss(criterion="least_squares")
        if lc.perceptual_weight > 0:
            self.perceptual = _perceptual_loss(cfg.path(lc.perceptual_weights)).to(info.device)

    def modules(self):
        mods = {"vae": self.recon}
        if self.disc is not None:
            mods["disc"] = self.disc
        return mods

    def learning_rates(self):
        return {"disc": self.cfg.vae.disc_lr} if self.cfg.vae.disc_lr > 0 else {}

    def dataset(self):
        return SliceDataset(self.train_cases, self.cfg.seed, self.cfg.data.flip_lr)

    def _kl_pass(self, x, batch, ctx: StepContext):
        """Reconstruction from a posterior sample, ``kl_weight * KL`` and its logs."""
        c, h, w = self.bundle.vae.config.embed_dim, x.shape[-2] // self.bundle.vae.config.downsampling, \
            x.shape[-1] // self.bundle.vae.config.downsampling
        noise = torch.stack([torch.randn(c, h, w, generator=torch_generator(self.cfg.seed, *k.tolist()))
                             for k in batch["key"]]).to(ctx.device)
        with ctx.autocast():
            recon, mean, logvar = ctx.model("vae")(x, noise)
        kl = kl_loss(mean.float(), logvar.float())
        return recon.float(), self.cfg.vae.kl_weight * kl, {"loss/kl": kl.detach()}

    def _vq_pass(self, x, ctx: StepContext):
        """Reconstruction from the codes (the codebook's EMA update happens here), commitment loss, usage logs."""
        with ctx.autocast():
            recon, commitment, counts = ctx.model("vae")(x)
        logs = {"loss/commitment": commitment.detach(), **vq_logs(self.bundle.vae.quantizer, counts)}
        return recon.float(), commitment.float(), logs

    def train_step(self, batch, step, ctx: StepContext):
        lc = self.cfg.vae
        x = batch["image"].to(ctx.device)
        recon, regulariser, reg_logs = self._vq_pass(x, ctx) if self.vq else self._kl_pass(x, batch, ctx)
        rec = F.l1_loss(recon, x)
        loss = rec + regulariser
        logs = {"loss/l1": rec.detach(), **reg_logs}
        if self.perceptual is not None:
            p = self.perceptual(recon, x)
            loss = loss + lc.perceptual_weight * p
            logs["loss/perceptual"] = p.detach()
        use_adv = self.disc is not None and step >= lc.adv_start
        if use_adv:
            params = {n: p.detach() for n, p in self.disc.named_parameters()}
            fake_logits = torch.func.functional_call(self.disc, params, (recon,))[-1]  # no grads into the disc
            g_adv = self.adv(fake_logits, target_is_real=True, for_discriminator=False)
            loss = loss + lc.adv_weight * g_adv
            logs["loss/g_adv"] = g_adv.detach()
        ctx.optimize("vae", loss)
        if use_adv:
            logits = ctx.model("disc")(torch.cat([x, recon.detach()]))[-1]
            real, fake = logits.chunk(2)
            d_loss = 0.5 * (self.adv(real, target_is_real=True, for_discriminator=True)
                            + self.adv(fake, target_is_real=False, for_discriminator=True))
            ctx.optimize("disc", d_loss)
            logs["loss/disc"] = d_loss.detach()
        logs["loss/total"] = loss.detach()
        return logs

    @torch.no_grad()
    def _reconstruct(self, image: np.ndarray) -> np.ndarray:
        vae = self.bundle.vae
        was = vae.training
        vae.eval()
        x = torch.from_numpy(np.array(image, dtype=np.float32))[:, None].to(self.info.device)
        out = torch.cat([vae.decode(vae.encode(x[i : i + 32])) for i in range(0, len(x), 32)])
        vae.train(was)
        return out[:, 0].clamp(-1, 1).float().cpu().numpy()

    def validate(self, step, folder: Path, ctx):
        case = val_case(self.cfg, self.train_cases, self.val_cases)
        with ctx.ema_weights():
            recon = self._reconstruct(np.asarray(case.image))
        image = np.asarray(case.image)
        l1 = float(np.abs(recon - image).mean())
        folder.mkdir(parents=True, exist_ok=True)
        save_val_montage(folder / f"vae-{step:07d}.png", case,
                         [("real", image, "image"), ("reconstruction", recon, "image")],
                         title=f"VAE step {step}: {case.name}, L1 {l1:.4f}")
        return {"val/l1": l1}

    @torch.no_grad()
    def latent_std(self) -> float:
        """Std of the latents (posterior means or codes) of up to ``latent_std_slices`` training slices (fixed draw)."""
        rng = np.random.default_rng(self.cfg.seed)
        vae = self.bundle.vae.eval()
        picks = [(c, int(rng.integers(c.num_slices))) for c in
                 (self.train_cases[int(i)] for i in rng.integers(len(self.train_cases),
                                                                 size=self.cfg.vae.latent_std_slices))]
        x = torch.from_numpy(np.stack([np.array(c.image[k]) for c, k in picks]))[:, None].to(self.info.device)
        means = torch.cat([vae.encode(x[i : i + 64]) for i in range(0, len(x), 64)])
        return float(means.float().std())

    def export(self, folder: Path, ctx):
        from napari_gem3d.models import save_bundle

        with ctx.export_weights():
            std = self.latent_std()
            bundle = with_component(self.bundle, "vae", self.bundle.vae, scale_factor=1.0 / std)
            bundle = record_stage(bundle, self.cfg, {"latent_std": std, "scale_factor": 1.0 / std,
                                                     "ema": ctx.exports_ema}, self.train_cases)
            return save_bundle(bundle, folder, overwrite=True, storage=self.cfg.train.storage)


def _perceptual_loss(weights: Path | None):
    """MONAI PerceptualLoss on a user-supplied ResNet-50 state file (nothing is downloaded)."""
    if weights is None or not Path(weights).is_file():
        raise ValueError(
            "vae.perceptual_weight > 0 needs vae.perceptual_weights: a local ResNet-50 weights file "
            "(e.g. RadImageNet); nothing is downloaded"
        )
    try:
        from monai.losses import PerceptualLoss

        return PerceptualLoss(spatial_dims=2, network_type="resnet50", pretrained=True,
                              pretrained_path=str(weights), pretrained_state_dict_key=None)
    except (ImportError, RuntimeError) as exc:  # torchvision is needed for the ResNet-50 body
        raise ValueError(f"cannot build the perceptual loss from {weights}: {exc}") from None
