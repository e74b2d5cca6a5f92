"""Writing a case's prediction: NIfTI on the input's grid and a PNG overlay.

`<case>_seg.nii.gz` is written with the affine and header of the case's
first channel, so it overlays the input in ITK-SNAP or 3D Slicer, in the
case's own label convention; `<case>.png` shows the input with the
prediction (and the label when the case has one) on the axial slice of
largest tumour extent. With Monte-Carlo dropout these are written beside it
(float32):

  <case>_mc_mean.nii.gz      (H, W, D, K) mean probability
  <case>_mc_std.nii.gz       (H, W, D, K) standard deviation over samples
  <case>_entropy.nii.gz      (H, W, D)    predictive entropy (nats)
  <case>_mutual_info.nii.gz  (H, W, D)    mutual information (nats)

Every file is written under a temporary name and renamed.
"""

import os
import tempfile

import nibabel as nib
import numpy as np

from jaxseg import labels
from jaxseg import plots
from jaxseg.data import sources
from jaxseg.inference.predictor import CaseOutput

# The per-case uncertainty files of Monte-Carlo dropout.
MC_FILES = dict(mean='mc_mean', std='mc_std', entropy='entropy',
                mutual_information='mutual_info')


def write_nifti(data: np.ndarray, reference: sources.Volume, path: str) -> None:
  """Writes (H, W, D[, K]) `data` on the grid of `reference`, atomically.

  The affine and header come from the reference's first channel (formats
  other than NIfTI have no header: a fresh one is made); the data type is
  `data`'s and no intensity scaling is stored.
  """
  header = None
  if isinstance(reference.header, nib.Nifti1Header):
    header = reference.header.copy()
    header.set_data_dtype(data.dtype)
  image = nib.Nifti1Image(data, reference.affine, header)
  image.header.set_slope_inter(1.0, 0.0)
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.nii.gz', dir=folder)
  os.close(fd)
  try:
    os.chmod(tmp, 0o666 & ~_umask())      # mkstemp makes it private
    nib.save(image, tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def display_channel(modalities) -> int:
  """The channel to draw under overlays: FLAIR if present, else the first."""
  names = [sources.canonical_modality(m) for m in modalities]
  return names.index('flair') if 'flair' in names else 0


def write_case_png(volume: sources.Volume, pred_label: np.ndarray, path: str,
                   label_mode: str, output: CaseOutput | None = None,
                   scheme: labels.LabelScheme | None = None) -> None:
  """`path`: the input with label and prediction on the slice of largest tumour.

  The legend names the values of the case's `scheme` (None: BraTS names). In
  binary label mode a sub-region label is drawn as its whole tumour, as the
  model sees it, and the legend names it 'tumour'.
  """
  label = volume.label
  if label is not None and label_mode == 'binary':
    label = (label > 0).astype(np.uint8)
  uncertainty_map = None if output is None else output.entropy
  plots.plot_case(volume.image[..., display_channel(volume.modalities)],
                  label, pred_label, path, uncertainty=uncertainty_map,
                  title=volume.case_id,
                  names=(labels.BINARY.class_names if label_mode == 'binary'
                         else labels.class_names(*[scheme] if scheme else [])))


def write_case(volume: sources.Volume, case: sources.Case, output: CaseOutput,
               pred_label: np.ndarray, folder: str,
               label_mode: str) -> list[str]:
  """Writes a case's segmentation, MC maps and PNG into `folder`; returns the paths."""
  paths = [os.path.join(folder, f'{case.case_id}_seg.nii.gz')]
  write_nifti(case.to_disk(pred_label.astype(np.uint8)), volume, paths[0])
  if output.std is not None:
    for field, name in MC_FILES.items():
      data = output.probs if field == 'mean' else getattr(output, field)
      path = os.path.join(folder, f'{case.case_id}_{name}.nii.gz')
      write_nifti(np.asarray(data, np.float32), volume, path)
      paths.append(path)
  png = os.path.join(folder, f'{case.case_id}.png')
  write_case_png(volume, pred_label, png, label_mode, output, case.scheme)
  return paths + [png]
