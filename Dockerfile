# htr-batch as a bring-your-own SageMaker container: one image for training, Batch Transform
# and real-time endpoints.
#
#   docker build -t htr-batch .
#   SageMaker runs `docker run IMAGE serve` (HTTP on 8080; model.tar.gz unpacked at /opt/ml/model)
#   and `docker run IMAGE train` (script mode: the job's sagemaker_program, e.g. jobs/train.py).
#   Launch with `htr sagemaker train|transform ... --image-uri <this image in ECR>`.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SAGEMAKER_SUPPRESS_V2_WARNING=1

# poppler-utils for PDFs (pypdfium2 is the fallback where it is missing), and the fonts the
# synthetic training data is drawn with (the bench peers and the test browser stay out)
COPY apt-packages.txt /tmp/apt-packages.txt
RUN apt-get update \
 && grep -v -E '^\s*(#|$)|^(tesseract|chromium)' /tmp/apt-packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/program

# Runtime pins (torch from PyPI brings its CUDA libraries); test-only pins stay out. The filtered
# copy stays beside requirements-fonts.txt, which its `-r` line names relative to itself.
COPY requirements.txt requirements-fonts.txt ./
RUN grep -v -E '^(pytest|moto|sagemaker-inference|cfn-lint)\b' requirements.txt > requirements-runtime.txt \
 && pip install -r requirements-runtime.txt

# SageMaker's training toolkit provides `train`: it fetches the job's source, sets SM_CHANNEL_*
# and SM_MODEL_DIR, passes hyperparameters as --key value, and runs torchrun for
# torch_distributed jobs. It compiles a small C extension, hence gcc for this step only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && pip install sagemaker-training==5.1.4 \
 && apt-get purge -y gcc libc6-dev && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml ./
COPY batch batch
COPY jobs jobs
COPY transforms transforms
COPY models models
RUN pip install --no-deps .

# `serve`: weights from model.tar.gz when the model has one (htr package-model puts them at its
# root), otherwise the models shipped in the image. exec: SIGTERM reaches htr serve directly.
RUN printf '%s\n' '#!/bin/sh' \
      'if [ -f /opt/ml/model/segmenter.json ]; then set -- --models /opt/ml/model "$@"; fi' \
      'exec htr serve --host 0.0.0.0 --port 8080 "$@"' > /usr/local/bin/serve \
 && chmod +x /usr/local/bin/serve

EXPOSE 8080
CMD ["serve"]
