"""SSL3D's entries in the Sample Data module: a generated phantom (image and organ segmentation) and a real chest CT."""

from pathlib import Path

import slicer
from slicer.i18n import tr as _

from SSLPretrainLib.engineSetup import ensureEngineRequirements

#: Sample Data module entries (category SSL3D). The phantom is generated locally by
#: ssl3d.data.phantoms.write_phantom_sample; PHANTOM_FILES must equal its SAMPLE_FILES (a static test checks).
SAMPLE_CATEGORY = "SSL3D"
PHANTOM_SAMPLE = "SSL3DPhantom"
PHANTOM_FILES = ("SSL3DPhantom-v1.nrrd", "SSL3DPhantom-v1.seg.nrrd")
PHANTOM_NODES = ("SSL3D phantom", "SSL3D phantom organs")
#: The "lung1" chest CT of pyradiomics, distributed under its BSD-3-Clause licence; 512 x 512 x 48 voxels,
#: 0.57 x 0.57 x 5 mm. The URL is pinned to commit 08bea70, which the pyradiomics 3.0.1 sdist was built from
#: (its radiomics/_version.py: full-revisionid 08bea7067e35..., "dirty": false, version "v3.0.1"); the repository
#: has no Git LFS and no filters on data/, so this blob is byte for byte the sdist's data/lung1_image.nrrd, the
#: file ssl3d.data.samples uses, whose SHA-256 is LUNG_CHECKSUM.
LUNG_SAMPLE = "SSL3DLungCT"
LUNG_URL = ("https://raw.githubusercontent.com/AIM-Harvard/pyradiomics/"
            "08bea7067e350303eead533b471aa60697b3b8c3/data/lung1_image.nrrd")
LUNG_FILE = "pyradiomics-lung1_image.nrrd"  # prefixed: other extensions may cache their own lung1_image.nrrd
LUNG_NODE = "SSL3D lung CT"
LUNG_CHECKSUM = "SHA256:379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed"
SAMPLE_THUMBNAILS = {PHANTOM_SAMPLE: "SSL3DPhantom.png", LUNG_SAMPLE: "SSL3DLungCT.png"}  # in Resources/Icons


def registerSampleData() -> None:
    """Add the SSL3D phantom and a real chest CT to the Sample Data module, category SSL3D."""
    import SampleData

    icons = Path(__file__).resolve().parents[1] / "Resources" / "Icons"
    folder = sampleCacheFolder()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName=PHANTOM_SAMPLE,
        # Generated, not downloaded. The custom downloader (the Sample Data button) writes the files into
        # Sample Data's cache folder and then loads them the usual way; Sample Data reuses a cached file
        # without downloading it, so the file URIs are never fetched once the files exist.
        uris=[(folder / name).absolute().as_uri() for name in PHANTOM_FILES],
        fileNames=list(PHANTOM_FILES),
        nodeNames=list(PHANTOM_NODES),
        loadFileType=["VolumeFile", "SegmentationFile"],  # older Slicers know only this keyword; newer still take it
        customDownloader=loadPhantomSample,
        thumbnailFileName=str(icons / SAMPLE_THUMBNAILS[PHANTOM_SAMPLE]),
    )
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName=LUNG_SAMPLE,
        uris=LUNG_URL,
        fileNames=LUNG_FILE,
        nodeNames=LUNG_NODE,
        checksums=LUNG_CHECKSUM,
        loadFileType="VolumeFile",
        thumbnailFileName=str(icons / SAMPLE_THUMBNAILS[LUNG_SAMPLE]),
    )


def sampleCacheFolder() -> Path:
    """The folder where Sample Data keeps downloads and reuses the files it finds."""
    return Path(slicer.mrmlScene.GetCacheManager().GetRemoteCacheDirectory())


def writePhantomSample():
    """Write the phantom's files into Sample Data's cache unless they are there; None if the engine is missing.

    ``SampleData.downloadSample("SSL3DPhantom")`` does not call custom downloaders (only the module's button
    does): call this first, then it finds and loads these files.
    """
    if not ensureEngineRequirements():
        return None
    from ssl3d.data.phantoms import write_phantom_sample

    return write_phantom_sample(sampleCacheFolder())


def loadPhantomSample(source=None) -> list:
    """Sample Data's custom downloader for the phantom: write it once, then load it as a downloaded sample.

    Sample Data calls it with the sample's ``SampleDataSource`` and ignores what it returns; here it returns
    the loaded nodes (image, organ segmentation), or [] when the engine's packages were not installed.
    """
    import SampleData

    with slicer.util.tryWithErrorDisplay(_("Failed to create the SSL3D phantom."), waitCursor=True):
        if writePhantomSample() is None:
            return []
        logic = SampleData.SampleDataLogic()
        return logic.downloadFromSource(source or logic.sourceForSampleName(PHANTOM_SAMPLE))
