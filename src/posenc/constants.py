"""Published numbers several layers share (torch-free): the ImageNet channel statistics torchvision's
weights were trained with, used by ``backbone.normalize`` (models) and the canvas fill ``mean`` (data)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
