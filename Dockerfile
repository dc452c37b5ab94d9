FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 IOPS_VAR_DIR=/app/var
WORKDIR /app
COPY pyproject.toml ./
COPY . .
RUN pip install --no-cache-dir -e . && useradd --create-home iops && mkdir -p var && chown -R iops var
USER iops
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "iops.asgi:application"]
