"""One-off: the MTCNN weights shipped as ``src/fdrl/weights/mtcnn.pt``, converted from facenet-pytorch's wheel.

facenet-pytorch 2.6.0 (MIT; PyPI) carries P-Net, R-Net and O-Net as three state dicts (``facenet_pytorch/data/
{pnet,rnet,onet}.pt``, themselves converted from the original MTCNN release). This script reads them straight out
of the wheel (no import of facenet-pytorch, so no torchvision), checks that each loads strictly into the port in
``fdrl.faces.mtcnn``, and writes one file of plain tensors that loads with ``weights_only=True``:

    pip download facenet-pytorch==2.6.0 --no-deps -d /tmp/fnp
    python scripts/convert_mtcnn_weights.py /tmp/fnp/facenet_pytorch-2.6.0-py3-none-any.whl

The wheel's licence is copied next to the weights as ``LICENSE-mtcnn.txt``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import torch

from fdrl.faces.mtcnn import NETS, WEIGHTS

LICENSE_HEADER = """\
The MTCNN weights in mtcnn.pt (P-Net, R-Net, O-Net) were converted by scripts/convert_mtcnn_weights.py from
facenet-pytorch {version} (https://pypi.org/project/facenet-pytorch/, files facenet_pytorch/data/pnet.pt, rnet.pt
and onet.pt; wheel sha256 {sha}).
facenet-pytorch converted them from the MTCNN release of Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks" (IEEE SPL 2016), via davidsandberg/facenet, both MIT-licensed.
facenet-pytorch's licence follows.

"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("wheel", help="facenet_pytorch-*.whl from pip download")
    p.add_argument("--out", default=str(WEIGHTS))
    args = p.parse_args()
    wheel = Path(args.wheel)
    version = wheel.name.split("-")[1]
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        state = {}
        for net, cls in NETS.items():
            sd = torch.load(io.BytesIO(z.read(f"facenet_pytorch/data/{net}.pt")), weights_only=True)
            cls().load_state_dict(sd, strict=True)  # the port has exactly these parameters
            state[net] = {k: v.float().contiguous() for k, v in sd.items()}
        licence = z.read(next(n for n in names if n.endswith(".dist-info/LICENSE.md"))).decode()
    out = Path(args.out)
    torch.save(state, out)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (out.parent / "LICENSE-mtcnn.txt").write_text(LICENSE_HEADER.format(version=version, sha=sha) + licence)
    print(f"wrote {out} ({out.stat().st_size} bytes) and {out.parent / 'LICENSE-mtcnn.txt'}")


if __name__ == "__main__":
    main()
