"""Instance shapes and on-demand prices: the committed table (helpers/data/ec2_prices.csv), refreshed from EC2 and the Price List API on eks."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.config import ROOT

if TYPE_CHECKING:
    from helpers.target import Target
from helpers.infra.aws.account import AwsUnavailable, call, client, region


PRICE_TABLE = ROOT / "helpers" / "data" / "ec2_prices.csv"


PRICING_API_REGION = "us-east-1"  # the Price List API answers from us-east-1 (and two other regions) for every region


@dataclass(frozen=True)
class InstanceType:
    """One row of the price table: an EC2 instance type's shape and on-demand hourly price."""

    instance_type: str
    family: str
    category: str
    generation: int
    size: str
    arch: str
    vcpu: int
    memory_gib: float
    gpu_count: int
    gpu_manufacturer: str
    gpu_name: str
    gpu_memory_gib: float
    neuron_devices: int
    accelerator_memory_gib: float
    price_usd_per_hour: Decimal
    price_source: str


def load_instance_types(path: Path | str = PRICE_TABLE) -> dict[str, InstanceType]:
    """The price table as InstanceType rows keyed by instance type (reads the committed CSV; no AWS call)."""
    text = Path(path).read_text()
    rows = csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))
    types = {f.name: f.type for f in fields(InstanceType)}
    result: dict[str, InstanceType] = {}
    for row in rows:
        values: dict[str, Any] = {}
        for name, raw in row.items():
            kind = types[name]
            if kind in ("int", int):
                values[name] = int(raw or 0)
            elif kind in ("float", float):
                values[name] = float(raw or 0)
            elif kind in ("Decimal", Decimal):
                values[name] = Decimal(raw)
            else:
                values[name] = raw or ""
        result[row["instance_type"]] = InstanceType(**values)
    return result


def price_table_header(path: Path | str = PRICE_TABLE) -> str:
    """The comment header of the price table: its source, region and date."""
    return "\n".join(line[2:] for line in Path(path).read_text().splitlines() if line.startswith("#"))


def save_instance_types(rows: Iterable[InstanceType], header: str, path: Path | str = PRICE_TABLE) -> Path:
    """Write the price table (header lines become # comments) and return its path."""
    out = io.StringIO()
    for line in header.splitlines():
        out.write(f"# {line}\n")
    names = [f.name for f in fields(InstanceType)]
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = asdict(row)
        values["price_usd_per_hour"] = format(row.price_usd_per_hour.normalize(), "f")
        writer.writerow(values)
    Path(path).write_text(out.getvalue())
    return Path(path)


def _architecture(info: dict[str, Any]) -> str:
    archs = info.get("ProcessorInfo", {}).get("SupportedArchitectures", [])
    return "arm64" if "arm64" in archs else "amd64"


def _instance_shape(info: dict[str, Any]) -> dict[str, Any]:
    name = info["InstanceType"]
    family, _, size = name.partition(".")
    match = re.match(r"^([a-z]+?)(\d+)", family)
    category, generation = (match.group(1), int(match.group(2))) if match else (family, 0)
    gpus = info.get("GpuInfo", {}).get("Gpus", [])
    gpu = gpus[0] if gpus else {}
    neuron = sum(d.get("Count", 0) for d in info.get("NeuronInfo", {}).get("NeuronDevices", []))
    neuron_mib = info.get("NeuronInfo", {}).get("TotalNeuronDeviceMemoryInMiB", 0)
    gpu_count = sum(g.get("Count", 0) for g in gpus)
    gpu_mib = gpu.get("MemoryInfo", {}).get("SizeInMiB", 0)
    return {
        "instance_type": name,
        "family": family,
        "category": category,
        "generation": generation,
        "size": size,
        "arch": _architecture(info),
        "vcpu": info["VCpuInfo"]["DefaultVCpus"],
        "memory_gib": info["MemoryInfo"]["SizeInMiB"] / 1024,
        "gpu_count": gpu_count,
        "gpu_manufacturer": str(gpu.get("Manufacturer", "")).lower(),
        "gpu_name": str(gpu.get("Name", "")).lower(),
        "gpu_memory_gib": gpu_mib / 1024,
        "neuron_devices": neuron,
        "accelerator_memory_gib": (neuron_mib / 1024) if neuron else gpu_count * gpu_mib / 1024,
    }


def describe_instance_types(names: Iterable[str], ec2: Any = None) -> dict[str, dict[str, Any]]:
    """Instance shapes from ec2:DescribeInstanceTypes (vCPUs, memory, GPUs, Neuron devices, architecture)."""
    ec2 = ec2 or client("ec2")
    names = sorted(set(names))
    shapes: dict[str, dict[str, Any]] = {}
    for start in range(0, len(names), 100):  # the API takes at most 100 names per request
        token = None
        while True:
            params: dict[str, Any] = {"InstanceTypes": names[start : start + 100]}
            if token:
                params["NextToken"] = token
            answer = call("describe instance types", ec2.describe_instance_types, **params)
            for info in answer.get("InstanceTypes", []):
                shapes[info["InstanceType"]] = _instance_shape(info)
            token = answer.get("NextToken")
            if not token:
                break
    return shapes


def _on_demand_usd(price_item: str) -> Decimal | None:
    product = json.loads(price_item)
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            usd = dimension.get("pricePerUnit", {}).get("USD")
            if usd is not None and dimension.get("unit") in ("Hrs", "Hours"):
                return Decimal(usd)
    return None


def pricing_filters(instance_type: str, region_code: str) -> list[dict[str, str]]:
    """Price List filters that single out one instance type's on-demand Linux price in one region."""
    return [
        {"Type": "TERM_MATCH", "Field": "instanceType", "Value": instance_type},
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region_code},
        {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
        {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
        {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
        {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
        {"Type": "TERM_MATCH", "Field": "licenseModel", "Value": "No License required"},
    ]


def on_demand_prices(names: Iterable[str], region_code: str | None = None, pricing: Any = None) -> dict[str, Decimal]:
    """On-demand Linux hourly USD prices from the AWS Price List API (pricing:GetProducts), by instance type."""
    pricing = pricing or client("pricing", PRICING_API_REGION)
    region_code = region_code or region()
    prices: dict[str, Decimal] = {}
    for name in sorted(set(names)):
        token = None
        while True:
            params: dict[str, Any] = {
                "ServiceCode": "AmazonEC2",
                "Filters": pricing_filters(name, region_code),
                "FormatVersion": "aws_v1",
                "MaxResults": 100,
            }
            if token:
                params["NextToken"] = token
            answer = call(f"read the price of {name}", pricing.get_products, **params)
            for item in answer.get("PriceList", []):
                usd = _on_demand_usd(item)
                if usd is not None and usd > 0:
                    prices[name] = usd
            token = answer.get("NextToken")
            if not token or name in prices:
                break
    return prices


def refresh_price_table(
    t: Target,
    names: Iterable[str] | None = None,
    path: Path | str = PRICE_TABLE,
    ec2: Any = None,
    pricing: Any = None,
) -> Path:
    """Rewrite the price table from EC2 and the Price List API for the target's region (eks target only)."""
    settings = t.settings
    if not t.is_eks:
        raise AwsUnavailable(
            "The price table is refreshed only for the eks target.",
            "Run with TARGET = \"eks\" (and AWS credentials); the local target uses the committed table.",
        )
    current = load_instance_types(path) if Path(path).exists() else {}
    names = sorted(set(names or current))
    shapes = describe_instance_types(names, ec2)
    prices = on_demand_prices(names, settings.aws_region, pricing)
    today = dt.date.today().isoformat()
    rows = []
    for name in names:
        if name not in shapes or name not in prices:
            continue  # not offered in this region
        rows.append(
            InstanceType(
                **shapes[name],
                price_usd_per_hour=prices[name],
                price_source=f"pricing-api-{settings.aws_region}-{today}",
            )
        )
    header = (
        "Amazon EC2 instance shapes and on-demand prices for the instance types the workshop's node pools can pick.\n"
        f"region: {settings.aws_region} | prices: USD per hour, on-demand, Linux, shared tenancy, "
        "no pre-installed software\n"
        f"source: ec2:DescribeInstanceTypes and pricing:GetProducts (AWS Price List API), refreshed {today}\n"
        "  by `python -m helpers.infra.aws refresh-prices`.\n"
        "Auto Mode adds a management fee per instance that is not in this table."
    )
    return save_instance_types(rows, header, path)
