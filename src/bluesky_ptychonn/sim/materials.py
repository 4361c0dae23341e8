"""Complex refractive indices n = 1 - delta + i beta, and the transmission of a thin layer.

The tabulated values are for 10 keV (Henke/CXRO tables, rounded). At other energies they are
scaled as delta ~ E^-2 and beta ~ E^-4, the behaviour far from absorption edges; that is an
approximation, stated here so nobody mistakes it for tabulated data. Give ``delta``/``beta``
directly (``Material(name, delta, beta, energy_ev)``) where the exact values matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import wavelength_m


@dataclass(frozen=True)
class Material:
    """A material's refractive-index decrement ``delta`` and absorption index ``beta``.

    Attributes:
        name: a label.
        delta: refractive-index decrement at ``energy_ev`` (dimensionless).
        beta: absorption index at ``energy_ev`` (dimensionless).
        energy_ev: photon energy (eV) at which delta and beta hold.
    """

    name: str
    delta: float
    beta: float
    energy_ev: float = 10_000.0

    def at_energy(self, energy_ev: float) -> Material:
        """The same material at another photon energy (delta ~ E^-2, beta ~ E^-4)."""
        ratio = self.energy_ev / float(energy_ev)
        return Material(self.name, self.delta * ratio**2, self.beta * ratio**4, float(energy_ev))

    def transmission(self, thickness_m: np.ndarray, energy_ev: float) -> np.ndarray:
        """Complex transmission exp(-i k (delta - i beta) t) of a layer of thickness t (m).

        The phase is -k delta t (negative where there is material, the convention of a wave
        exp(i(kz - wt)) through index n = 1 - delta + i beta relative to vacuum) and the
        amplitude exp(-k beta t).
        """
        material = self.at_energy(energy_ev) if energy_ev != self.energy_ev else self
        k = 2 * np.pi / wavelength_m(energy_ev)
        thickness_m = np.asarray(thickness_m, dtype=np.float64)
        if np.any(thickness_m < 0):
            raise ValueError("thickness must be non-negative")
        return np.exp(-1j * k * (material.delta - 1j * material.beta) * thickness_m).astype(
            np.complex64
        )


MATERIALS: dict[str, Material] = {
    "gold": Material("gold", delta=2.99e-5, beta=2.21e-6),
    "tungsten": Material("tungsten", delta=3.03e-5, beta=2.42e-6),
    "nickel": Material("nickel", delta=1.93e-5, beta=4.28e-7),
    "silicon": Material("silicon", delta=4.89e-6, beta=7.43e-8),
}


def material(name_or_material: str | Material) -> Material:
    """Look a material up by name (case-insensitive) or pass a `Material` through."""
    if isinstance(name_or_material, Material):
        return name_or_material
    key = str(name_or_material).lower()
    if key not in MATERIALS:
        raise ValueError(f"unknown material {name_or_material!r}; known: {sorted(MATERIALS)}")
    return MATERIALS[key]
