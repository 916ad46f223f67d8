"""smile-vlm: 3D/4D facial expression recognition with vision-language models.

The library is split by pipeline stage; each stage is one module (or one small package):

readers  raw scan formats of BU-3DFE, BU-4DFE, BP4D-Spontaneous, Bosphorus and 4DME
index    walk a dataset root into a manifest (one row per scan or frame) and a rejects table
synth    the embedded default: synthetic FACS-driven faces written in those raw formats
render   canonical face frame and offscreen multiview rendering (pyrender)
dynamic  rank pooling of rendered frames into dynamic images
store    Zarr stores of rendered samples and the torch Dataset that reads them
model    SMILE-VLM and FACET-VLM
losses   the losses of both papers, with their equation numbers
train    training of one fold
evaluate zero-shot and linear-probe evaluation of one fold
report   tables and figures

cli          the ``smile-vlm`` command (one subcommand per step; logging and user errors)
configcheck  a workflow config's cross-references and dataset roots, checked before any job
glcheck      refuses a PyOpenGL that cannot render offscreen, naming the fix

The Snakemake workflow (Snakefile, workflow/rules) calls these through the ``smile-vlm`` CLI.
"""

__version__ = "0.1.0"
