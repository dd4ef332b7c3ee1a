from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetDeviceRequest(_message.Message):
    __slots__ = ("index",)
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    def __init__(self, index: _Optional[int] = ...) -> None: ...

class GpuProcess(_message.Message):
    __slots__ = ("pid", "used_memory_mb")
    PID_FIELD_NUMBER: _ClassVar[int]
    USED_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    pid: int
    used_memory_mb: int
    def __init__(self, pid: _Optional[int] = ..., used_memory_mb: _Optional[int] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("index", "name", "uuid", "memory_total_mb", "memory_free_mb", "memory_used_mb", "utilization_percent", "temperature_c", "power_w", "processes", "reserved_mb")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_MB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_MB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MB_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    RESERVED_MB_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    uuid: str
    memory_total_mb: int
    memory_free_mb: int
    memory_used_mb: int
    utilization_percent: float
    temperature_c: float
    power_w: float
    processes: _containers.RepeatedCompositeFieldContainer[GpuProcess]
    reserved_mb: int
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., uuid: _Optional[str] = ..., memory_total_mb: _Optional[int] = ..., memory_free_mb: _Optional[int] = ..., memory_used_mb: _Optional[int] = ..., utilization_percent: _Optional[float] = ..., temperature_c: _Optional[float] = ..., power_w: _Optional[float] = ..., processes: _Optional[_Iterable[_Union[GpuProcess, _Mapping]]] = ..., reserved_mb: _Optional[int] = ...) -> None: ...

class GpuStatus(_message.Message):
    __slots__ = ("cuda_available", "driver_version", "cuda_runtime_version", "device_count", "devices", "source")
    CUDA_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    cuda_available: bool
    driver_version: str
    cuda_runtime_version: str
    device_count: int
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    source: str
    def __init__(self, cuda_available: _Optional[bool] = ..., driver_version: _Optional[str] = ..., cuda_runtime_version: _Optional[str] = ..., device_count: _Optional[int] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., source: _Optional[str] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("service", "device", "memory_mb", "ttl_s", "pid")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    service: str
    device: int
    memory_mb: int
    ttl_s: int
    pid: int
    def __init__(self, service: _Optional[str] = ..., device: _Optional[int] = ..., memory_mb: _Optional[int] = ..., ttl_s: _Optional[int] = ..., pid: _Optional[int] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "device", "memory_mb", "service", "expires_at_unix", "pid")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    device: int
    memory_mb: int
    service: str
    expires_at_unix: float
    pid: int
    def __init__(self, lease_id: _Optional[str] = ..., device: _Optional[int] = ..., memory_mb: _Optional[int] = ..., service: _Optional[str] = ..., expires_at_unix: _Optional[float] = ..., pid: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    def __init__(self, lease_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("lease_id", "ttl_s")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    ttl_s: int
    def __init__(self, lease_id: _Optional[str] = ..., ttl_s: _Optional[int] = ...) -> None: ...

class GpuInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GpuInfo(_message.Message):
    __slots__ = ("source", "version", "default_lease_ttl_s", "active_leases")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LEASE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_LEASES_FIELD_NUMBER: _ClassVar[int]
    source: str
    version: str
    default_lease_ttl_s: int
    active_leases: int
    def __init__(self, source: _Optional[str] = ..., version: _Optional[str] = ..., default_lease_ttl_s: _Optional[int] = ..., active_leases: _Optional[int] = ...) -> None: ...
