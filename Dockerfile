# PanoSAMic Studio: the Gradio app in a container (also the layout of a Docker Hugging Face Space).
#   docker build -t panosamic-studio .
#   docker run --rm -p 7860:7860 panosamic-studio                      # weights from the Hub on first Run
#   docker run --rm -p 7860:7860 -v /path/to/ckpt:/ckpt:ro \
#       -e PANOSAMIC_CHECKPOINT=/ckpt panosamic-studio                 # local weights, works offline
# On a GPU host add `--gpus all` (requirements.txt then resolves torch's CUDA build).
# onnxruntime-web for the live mask preview (the page decodes SAM prompts itself): npm ci in a
# Node stage, only its dist folder is copied into the app (no Node in the final image).
FROM node:20-slim AS web
WORKDIR /web
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HOME=/home/user \
    HF_HOME=/home/user/.cache/huggingface

# tcmalloc: SAM's attention allocates and frees hundreds of MB per block, which glibc's malloc
# maps and unmaps each time; the app, CLI and bench restart themselves once with this library
# preloaded (panosamic/allocator.py). On the 2-core CPU machine: vit_b encoder 19.8 s -> 11.2 s.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libtcmalloc-minimal4 \
    && rm -rf /var/lib/apt/lists/*

# Non-root user with uid 1000 (what Hugging Face Spaces run as).
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

COPY --chown=user:user requirements.txt .
RUN pip install -r requirements.txt

COPY --chown=user:user . .
COPY --from=web --chown=user:user /web/node_modules/onnxruntime-web/dist ./node_modules/onnxruntime-web/dist
USER user

EXPOSE 7860
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
